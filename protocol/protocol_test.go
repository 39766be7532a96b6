package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeValid(t *testing.T) {
	cases := []struct {
		name, frame, typ string
	}{
		{"hello", `{"type":"hello","bridge":{"name":"x","version":"1","platform":"sim"},"features":["batch"]}`, TypeHello},
		{"hello with card", `{"type":"hello","bridge":{},"features":[],"card":{"uid":"04a1b2c3d4e5f6"}}`, TypeHello},
		{"card upper", `{"type":"card","uid":"04A1B2C3D4E5F6","ats":"0675778102"}`, TypeCard},
		{"card 4-byte", `{"type":"card","uid":"08A1B2C3"}`, TypeCard},
		{"responses", `{"type":"responses","id":1,"rapdus":["9100","0102AF91AF"]}`, TypeResponses},
		{"responses tag lost", `{"type":"responses","id":3,"rapdus":[],"error":"tag_lost"}`, TypeResponses},
		{"unknown field ignored", `{"type":"cancel","reason":"user","future":{"x":1}}`, TypeCancel},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode([]byte(c.frame))
			if err != nil {
				t.Fatal(err)
			}
			if m.Type != c.typ {
				t.Fatalf("type %q", m.Type)
			}
		})
	}
	m, _ := Decode([]byte(`{"type":"hello","bridge":{},"features":["batch"]}`))
	if !m.Hello.HasFeature(FeatureBatch) || m.Hello.HasFeature("x") {
		t.Fatal("features")
	}
}

func TestDecodeRejects(t *testing.T) {
	cases := map[string]string{
		"not json":        `{"type":`,
		"array":           `[1,2]`,
		"no type":         `{"id":1}`,
		"unknown type":    `{"type":"transceive","id":1,"capdus":[]}`,
		"odd hex":         `{"type":"card","uid":"04A"}`,
		"non hex":         `{"type":"card","uid":"04zz1122334455"}`,
		"uid length":      `{"type":"card","uid":"0401"}`,
		"hex not string":  `{"type":"card","uid":12}`,
		"short rapdu":     `{"type":"responses","id":1,"rapdus":["91"]}`,
		"zero id":         `{"type":"responses","id":0,"rapdus":[]}`,
		"negative id":     `{"type":"responses","id":-1,"rapdus":[]}`,
		"unknown error":   `{"type":"responses","id":1,"rapdus":[],"error":"boom"}`,
		"trailing":        `{"type":"cancel"} {"type":"cancel"}`,
		"too many rapdus": `{"type":"responses","id":1,"rapdus":[` + strings.Repeat(`"9000",`, 64) + `"9000"]}`,
		"oversized":       `{"type":"cancel","reason":"` + strings.Repeat("a", MaxFrame) + `"}`,
		"hello card bad":  `{"type":"hello","bridge":{},"card":{"uid":""}}`,
	}
	for name, frame := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode([]byte(frame)); !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","bridge":{"name":"x"},"features":["batch"],"card":{"uid":"04A1B2C3D4E5F6"}}`,
		`{"type":"responses","id":1,"rapdus":["9100"]}`,
		`{"type":"card","uid":"04A1B2C3D4E5F6"}`,
		`{"type":"cancel"}`, `{}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error not wrapping ErrProtocol: %v", err)
			}
			return
		}
		n := 0
		for _, p := range []bool{m.Hello != nil, m.Card != nil, m.Responses != nil, m.Cancel != nil} {
			if p {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("decoded %d bodies for type %q", n, m.Type)
		}
	})
}

func TestDecodeServer(t *testing.T) {
	good := map[string]string{
		"ready":      `{"type":"ready","session_id":"s","kind":"topup"}`,
		"transceive": `{"type":"transceive","id":1,"capdus":[{"apdu":"905A00000399440100","expect":["9100"]},{"apdu":"9060000000"}]}`,
		"prompt":     `{"type":"prompt","text":"Hold the card still","progress":0.5}`,
		"result":     `{"type":"result","ok":true,"kind":"topup","session_id":"s","balance":100}`,
		"future":     `{"type":"shiny","x":1}`,
	}
	for name, f := range good {
		if _, err := DecodeServer([]byte(f)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]string{
		"no capdus":    `{"type":"transceive","id":1,"capdus":[]}`,
		"short apdu":   `{"type":"transceive","id":1,"capdus":[{"apdu":"90"}]}`,
		"bad expect":   `{"type":"transceive","id":1,"capdus":[{"apdu":"9060000000","expect":["91"]}]}`,
		"nonhex sw":    `{"type":"transceive","id":1,"capdus":[{"apdu":"9060000000","expect":["91ZZ"]}]}`,
		"no id":        `{"type":"transceive","capdus":[{"apdu":"9060000000"}]}`,
		"not json":     `nope`,
		"no type":      `{}`,
		"result types": `{"type":"result","ok":"yes"}`,
	}
	for name, f := range bad {
		if _, err := DecodeServer([]byte(f)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func FuzzDecodeServer(f *testing.F) {
	f.Add([]byte(`{"type":"transceive","id":1,"capdus":[{"apdu":"905A00000399440100","expect":["9100"]}]}`))
	f.Add([]byte(`{"type":"result","ok":false,"error":{"code":"x","message":"y"}}`))
	f.Add([]byte(`{"type":"session","session_id":"4f1c0a7e-0000-4000-8000-000000000001","kind":"balance"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeServer(b)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		if m.Transceive != nil {
			for _, c := range m.Transceive.CAPDUs {
				if _, err := c.ExpectSW(); err != nil {
					t.Fatal("validated transceive has a bad expect list")
				}
			}
		}
	})
}

func TestDecodeSessionOffer(t *testing.T) {
	m, err := DecodeServer([]byte(`{"type":"session","session_id":"s1","kind":"balance"}`))
	if err != nil || m.Session == nil || m.Session.SessionID != "s1" || m.Session.Kind != "balance" {
		t.Fatalf("offer: %+v %v", m, err)
	}
	for _, bad := range []string{`{"type":"session","kind":"balance"}`, `{"type":"session","session_id":7}`} {
		if _, err := DecodeServer([]byte(bad)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
