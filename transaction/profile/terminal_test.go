package profile

import (
	"errors"
	"testing"
)

func TestTerminalKeys(t *testing.T) {
	p := AN12113OTA()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(p *Profile){
		"EV1":             func(p *Profile) { p.Auth, p.HasTMAC = AuthEV1, false },
		"same as server":  func(p *Profile) { p.TerminalKeys = &TerminalKeys{Read: 3, Write: 2} },
		"master key":      func(p *Profile) { p.TerminalKeys = &TerminalKeys{Read: 1, Write: 0} },
		"key number > 13": func(p *Profile) { p.TerminalKeys = &TerminalKeys{Read: 14, Write: 2} },
	} {
		q := AN12113OTA()
		mod(&q)
		if err := q.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
