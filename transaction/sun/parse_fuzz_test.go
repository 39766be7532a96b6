package sun_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/desfire-relay/relay/transaction/sun"
)

// FuzzParse feeds arbitrary query strings to the parser of an AES
// template with file data and of a plain-mirror LRP template: it must
// never panic, must answer either a message or an *InputError, and what
// it returns must respect the template's sizes.
func FuzzParse(f *testing.F) {
	off := 0
	tpls := []*sun.Template{
		{Name: "a", PICCParam: "p", FileParam: "f", MACParam: "m", MACInputFrom: "f",
			MetaReadKey: &sun.KeyRef{AID: "000001", KeyNo: 1}, FileReadKey: sun.KeyRef{AID: "000001", KeyNo: 2}, Tamper: &sun.Tamper{FileOffset: &off}},
		{Name: "b", Mode: sun.ModeLRP, UIDParam: "uid", CtrParam: "ctr", MACParam: "cmac", MACInputFrom: "uid",
			FileReadKey: sun.KeyRef{AID: "000001", KeyNo: 2}, Tamper: &sun.Tamper{Param: "tt"}},
		{Name: "bulk", PICCParam: "e", FileParam: "e", MACParam: "e", MACInputFrom: "e", FileDataMax: 64,
			MetaReadKey: &sun.KeyRef{AID: "000001", KeyNo: 1}, FileReadKey: sun.KeyRef{AID: "000001", KeyNo: 2}},
		{Name: "encmac", PICCParam: "p", FileParam: "f", MACParam: "f", MACInputFrom: "f",
			MetaReadKey: &sun.KeyRef{AID: "000001", KeyNo: 1}, FileReadKey: sun.KeyRef{AID: "000001", KeyNo: 2}},
	}
	for _, t := range tpls {
		if err := t.Validate(); err != nil {
			f.Fatal(err)
		}
	}
	f.Add("p=EF963FF7828658A599F3041510671E88&f=CEE9A53E3E463EF1F459635736738962&m=94EED9EE65337086")
	f.Add("uid=041E3C8A2D6B80&ctr=000006&tt=CO&cmac=4B00064004B0B3D3")
	f.Add("m=00&m=00&&&=&p")
	f.Add("e=4F5B914723915D456C038FE658686CD55CE7DCDEA93F5DA7AAA0AADC97485ABFFFCD8DE82AD05289")
	f.Add("p=8ACADDEF0A9B62CDAE39A16B83FC14DE&f=B8436E11F627BB7F543FCC0C1E0D1A89238B2543A8DEBAD8")
	f.Add("ctr=FFFFFF&uid=041E3C8A2D6B80&cmac=4B00064004B0B3D3&tt=OO")
	f.Fuzz(func(t *testing.T, q string) {
		for _, tpl := range tpls {
			m, err := sun.Parse(tpl, q)
			if err != nil {
				var ie *sun.InputError
				if !errors.As(err, &ie) || ie.Code == "" {
					t.Fatalf("error %v is not an InputError", err)
				}
				continue
			}
			if len(m.MAC) != 8 || len(q) > sun.MaxQuery {
				t.Fatalf("accepted MAC of %d bytes from a %d-byte query", len(m.MAC), len(q))
			}
			if tpl.PICCParam != "" && len(m.EncPICC) != 16 {
				t.Fatalf("PICCData of %d bytes", len(m.EncPICC))
			}
			if tpl.FileParam != "" && (len(m.EncFile) == 0 || len(m.EncFile)%16 != 0 || len(m.EncFile) > tpl.FileDataMax) {
				t.Fatalf("file data of %d bytes", len(m.EncFile))
			}
			if tpl.UIDParam != "" && (len(m.UID) != 7 || m.Counter == 0xFFFFFF) {
				t.Fatalf("UID %X counter %X", m.UID, m.Counter)
			}
			if tpl.MACParam == tpl.FileParam && hex.EncodeToString(m.EncFile) != strings.ToLower(string(m.MACInput)) {
				t.Fatalf("MAC input %q is not the file data %X", m.MACInput, m.EncFile)
			}
			if !strings.Contains(q, string(m.MACInput)) {
				t.Fatalf("MAC input %q is not part of the query", m.MACInput)
			}
		}
	})
}
