package sun

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/desfire-relay/relay/desfire/sdm"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
)

// Status is a verification's answer.
type Status string

// Answers of Verify.
const (
	// Authentic: the MAC verifies and the counter is above every counter
	// accepted before for this tag.
	Authentic Status = "authentic"
	// Replayed: the MAC verifies but the counter is not above the last
	// accepted one (a copied URL, or the same URL submitted twice).
	Replayed Status = "replayed"
	// Invalid: the message does not verify with the template's keys.
	Invalid Status = "invalid"
	// UnknownTag: no key for this tag, or (RequireKnown) not registered.
	UnknownTag Status = "unknown_tag"
	// Tampered: authentic (and accepted), but TagTamper reports open.
	Tampered Status = "tampered"
)

// Clone signal kinds.
const (
	SignalCounterJump      = "counter_jump"
	SignalSameCounterMAC   = "same_counter_different_mac"
	SignalStaleGap         = "stale_gap"
	SignalImpossibleTravel = "impossible_travel"
)

// ErrRateLimited is returned when the per-tag limit refuses a message.
var ErrRateLimited = errors.New("sun: too many verifications for this tag")

// Request is one verification request.
type Request struct {
	// Template is the {template} path segment.
	Template string
	// RawQuery is the URL's query string exactly as received.
	RawQuery string
	// Region is an optional location hint (country or region code from a
	// trusted proxy header), used for impossible-travel signals.
	Region string
	// AllowTag, if set, is asked with the authentic UID and counter once
	// the message's MAC verified and before anything is stored; false
	// refuses it with ErrRateLimited (a per-tag rate limit that
	// unauthenticated noise cannot drain).
	AllowTag func(uid string, counter uint32) bool
}

// Result is a verification's outcome. UID, Counter and FileData are set
// when the MAC verified.
type Result struct {
	Status   Status   `json:"status"`
	Template string   `json:"template"`
	Mode     string   `json:"mode"`
	UID      string   `json:"uid,omitempty"`
	Counter  *uint32  `json:"counter,omitempty"`
	FileData string   `json:"file_data,omitempty"`
	Tamper   string   `json:"tamper_status,omitempty"`
	Clone    bool     `json:"clone_suspected"`
	Signals  []string `json:"signals,omitempty"`
	// Reason says why a message is invalid (never key material).
	Reason string `json:"reason,omitempty"`
}

// Config configures a Verifier.
type Config struct {
	Templates []Template
	Keys      keys.Provider
	Store     ledger.SUNStore
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Verifier checks SUN messages against configured templates.
type Verifier struct {
	cfg       Config
	templates map[string]*Template
}

// NewVerifier validates the templates.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Keys == nil || cfg.Store == nil {
		return nil, fmt.Errorf("sun verifier: keys and store are required: %w", ErrTemplate)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg, templates: map[string]*Template{}}
	for i := range cfg.Templates {
		t := cfg.Templates[i]
		if err := t.validate(cfg.Keys); err != nil {
			return nil, err
		}
		if _, dup := v.templates[t.Name]; dup {
			return nil, fmt.Errorf("template %s defined twice: %w", t.Name, ErrTemplate)
		}
		v.templates[t.Name] = &t
	}
	return v, nil
}

// Templates lists the template names.
func (v *Verifier) Templates() []string {
	out := make([]string, 0, len(v.templates))
	for n := range v.templates {
		out = append(out, n)
	}
	return out
}

// Verify checks one message. Bad input is an *InputError (nothing
// stored); an error otherwise means the key provider or the ledger
// failed and no answer can be given.
func (v *Verifier) Verify(ctx context.Context, req Request) (Result, error) {
	t, ok := v.templates[req.Template]
	if !ok {
		return Result{}, inputErr(CodeUnknownTemplate, "", "no template %q", sanitize(req.Template))
	}
	m, err := Parse(t, req.RawQuery)
	if err != nil {
		return Result{}, err
	}
	res := Result{Template: t.Name, Mode: t.Mode}
	p, status, err := v.picc(ctx, t, m)
	if err != nil || status != "" {
		res.Status, res.Reason = status, "picc_data"
		return res, err
	}
	if p.ReadCtr == sdm.MaxReadCtr {
		return Result{}, inputErr(CodeCounterExhausted, t.PICCParam, "counter FFFFFF: the tag's read counter is exhausted")
	}
	uid := strings.ToUpper(hex.EncodeToString(p.UID))
	sesKey, status, err := v.checkMAC(ctx, t, m, p)
	if err != nil || status != "" {
		res.Status = status
		if status == Invalid {
			res.Reason = "mac"
		}
		return res, err
	}
	ctr := p.ReadCtr
	res.UID, res.Counter = uid, &ctr
	if m.EncFile != nil {
		var fd []byte
		if t.Mode == ModeLRP {
			fd, err = sdm.DecryptFileDataLRP(sesKey, ctr, m.EncFile)
		} else {
			fd, err = sdm.DecryptFileData(sesKey, ctr, m.EncFile)
		}
		if err != nil {
			return Result{}, fmt.Errorf("template %s: file data: %w", t.Name, err)
		}
		res.FileData = strings.ToUpper(hex.EncodeToString(fd))
		if t.Tamper != nil && t.Tamper.FileOffset != nil {
			if o := *t.Tamper.FileOffset; o+2 <= len(fd) {
				res.Tamper = string(fd[o : o+2])
			}
		}
	}
	if m.Tamper != "" {
		res.Tamper = m.Tamper
	}
	if req.AllowTag != nil && !req.AllowTag(uid, ctr) {
		return Result{}, ErrRateLimited
	}
	now := v.cfg.Now()
	mac := strings.ToUpper(hex.EncodeToString(m.MAC))
	rec, err := v.cfg.Store.RecordSUN(ctx, ledger.SUNCheck{UID: uid, Template: t.Name, Tenant: t.Tenant, Counter: ctr, MAC: mac,
		Region: req.Region, At: now, RequireKnown: t.RequireKnown})
	if err != nil {
		return Result{}, fmt.Errorf("template %s: %w", t.Name, err)
	}
	var sigs []ledger.SUNSignal
	switch {
	case !rec.Known && t.RequireKnown:
		res = Result{Status: UnknownTag, Template: t.Name, Mode: t.Mode, Reason: "not_registered"}
		return res, nil
	case !rec.Accepted:
		res.Status = Replayed
		if rec.LastCounter == int64(ctr) && rec.LastMAC != "" && rec.LastMAC != mac {
			sigs = append(sigs, ledger.SUNSignal{Kind: SignalSameCounterMAC, Counter: ctr, At: now,
				Detail: "counter accepted before with another MAC"})
		}
	default:
		res.Status = Authentic
		if strings.ContainsRune(res.Tamper, 'O') {
			res.Status = Tampered
		}
		sigs = signals(t, rec, ctr, req.Region, now)
	}
	if len(sigs) > 0 {
		if err := v.cfg.Store.AddSUNSignals(ctx, uid, sigs); err != nil {
			return Result{}, fmt.Errorf("template %s: %w", t.Name, err)
		}
		res.Clone = true
		for _, s := range sigs {
			res.Signals = append(res.Signals, s.Kind)
		}
	}
	if res.Status == Replayed {
		// A replayed URL's data is not news to anyone; keep it out.
		res.FileData = ""
	}
	return res, nil
}

// signals returns the clone signals an accepted message raises.
func signals(t *Template, rec ledger.SUNRecord, ctr uint32, region string, now time.Time) []ledger.SUNSignal {
	if !rec.HasPrev {
		return nil
	}
	var out []ledger.SUNSignal
	gap := ctr - rec.PrevCounter
	if t.MaxCounterGap > 0 && gap > t.MaxCounterGap {
		out = append(out, ledger.SUNSignal{Kind: SignalCounterJump, Counter: ctr, At: now,
			Detail: fmt.Sprintf("counter %d after %d (gap above %d)", ctr, rec.PrevCounter, t.MaxCounterGap)})
	}
	age := now.Sub(rec.PrevAt)
	if t.MaxAge > 0 && gap > 1 && age > time.Duration(t.MaxAge) {
		out = append(out, ledger.SUNSignal{Kind: SignalStaleGap, Counter: ctr, At: now,
			Detail: fmt.Sprintf("%d reads never submitted, last verification %s ago", gap-1, age.Round(time.Second))})
	}
	if t.TravelWindow > 0 && region != "" && rec.PrevRegion != "" && region != rec.PrevRegion && age < time.Duration(t.TravelWindow) {
		out = append(out, ledger.SUNSignal{Kind: SignalImpossibleTravel, Counter: ctr, At: now,
			Detail: fmt.Sprintf("%s then %s within %s", sanitize(rec.PrevRegion), sanitize(region), age.Round(time.Second))})
	}
	return out
}

// picc returns the tag's UID and counter: decrypted PICCData, or the
// plain mirrors. A status is returned when the message cannot be tied to
// a tag.
func (v *Verifier) picc(ctx context.Context, t *Template, m *Message) (*sdm.PICCData, Status, error) {
	if m.EncPICC == nil {
		return &sdm.PICCData{UID: m.UID, ReadCtr: m.Counter, HasReadCtr: true}, "", nil
	}
	found := false
	for _, ref := range t.metaRefs {
		k, err := v.cfg.Keys.CardKey(ctx, ref, nil)
		if errors.Is(err, keys.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("template %s: meta read key %s: %w", t.Name, ref, err)
		}
		found = true
		if t.MetaReadKey.Derivation == DerivationSDMBackend {
			if k, err = sdm.BackendMetaReadKey(k); err != nil {
				return nil, "", fmt.Errorf("template %s: meta read key: %w", t.Name, err)
			}
		}
		var p *sdm.PICCData
		if t.Mode == ModeLRP {
			p, err = sdm.DecryptPICCDataLRP(k, m.EncPICC)
		} else {
			p, err = sdm.DecryptPICCData(k, m.EncPICC)
		}
		if errors.Is(err, sdm.ErrPICCData) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("template %s: PICCData: %w", t.Name, err)
		}
		if p.UID == nil || !p.HasReadCtr {
			// Without UID and counter there is nothing to bind a replay
			// check to; such a tag is provisioned wrongly for this use.
			return nil, Invalid, nil
		}
		return p, "", nil
	}
	if !found {
		return nil, "", fmt.Errorf("template %s: no meta read key: %w", t.Name, keys.ErrNotFound)
	}
	return nil, Invalid, nil
}

// checkMAC tries the file read key versions and returns the session key
// (AES: KSesSDMFileReadENC; LRP: KSesSDMFileRead) of the one that
// verifies.
func (v *Verifier) checkMAC(ctx context.Context, t *Template, m *Message, p *sdm.PICCData) ([]byte, Status, error) {
	found := false
	for _, ref := range t.fileRefs {
		k, err := v.cfg.Keys.CardKey(ctx, ref, p.UID)
		if errors.Is(err, keys.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("template %s: file read key %s: %w", t.Name, ref, err)
		}
		found = true
		if t.FileReadKey.Derivation == DerivationSDMBackend {
			if k, err = sdm.BackendTagKey(k, p.UID, ref.KeyNo); err != nil {
				return nil, "", fmt.Errorf("template %s: file read key: %w", t.Name, err)
			}
		}
		var ses, want []byte
		if t.Mode == ModeLRP {
			if ses, err = sdm.SessionKeyLRP(k, p); err == nil {
				want, err = sdm.MACLRP(ses, m.MACInput)
			}
		} else {
			var macKey []byte
			if ses, macKey, err = sdm.SessionKeys(k, p); err == nil {
				want, err = sdm.MAC(macKey, m.MACInput)
			}
		}
		if err != nil {
			return nil, "", fmt.Errorf("template %s: SDMMAC: %w", t.Name, err)
		}
		if constantTimeEqual(want, m.MAC) {
			return ses, "", nil
		}
	}
	if !found {
		return nil, UnknownTag, nil
	}
	return nil, Invalid, nil
}

// sanitize bounds and cleans text from a request before it is echoed.
func sanitize(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
