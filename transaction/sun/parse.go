package sun

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/desfire-relay/relay/desfire/sdm"
)

// Bounds on a query before anything is decoded.
const (
	// MaxQuery is the longest raw query string accepted (bytes).
	MaxQuery = 1024
	// MaxParams is the most parameters a query may carry (the tag's and
	// a few a link shortener or tracker may add).
	MaxParams = 16
)

// Error codes of bad input, stable for API clients.
const (
	CodeQueryTooLarge    = "query_too_large"
	CodeTooManyParams    = "too_many_parameters"
	CodeMissingParam     = "missing_parameter"
	CodeDuplicateParam   = "duplicate_parameter"
	CodeNotHex           = "not_hex"
	CodeBadLength        = "bad_length"
	CodeCounterExhausted = "counter_exhausted"
	CodeParamOrder       = "parameter_order"
	CodeUnknownTemplate  = "unknown_template"
)

// ErrInput is what every *InputError unwraps to.
var ErrInput = errors.New("sun: bad input")

// InputError is a request refused before any key was used or anything
// stored: a 400 with Code.
type InputError struct {
	Code  string
	Param string
	Msg   string
}

// Error says what was refused, naming the parameter.
func (e *InputError) Error() string {
	if e.Param != "" {
		return fmt.Sprintf("sun: %s: parameter %q: %s", e.Code, e.Param, e.Msg)
	}
	return fmt.Sprintf("sun: %s: %s", e.Code, e.Msg)
}

// Unwrap makes errors.Is(err, ErrInput) hold.
func (e *InputError) Unwrap() error { return ErrInput }

func inputErr(code, param, format string, args ...any) *InputError {
	return &InputError{Code: code, Param: param, Msg: fmt.Sprintf(format, args...)}
}

// Message is a parsed, not yet verified, SUN query.
type Message struct {
	EncPICC  []byte // encrypted PICCData (nil for plain mirroring)
	UID      []byte // plain UID mirror
	Counter  uint32 // plain counter mirror
	EncFile  []byte // encrypted file data (nil if none)
	MAC      []byte // SDMMAC
	MACInput []byte // the ASCII the SDMMAC covers
	Tamper   string // plain TagTamper status, if the template mirrors it
}

type param struct {
	value string
	start int // offset of the value in the raw query
}

// Parse reads a raw query string as t's tag writes it. It refuses
// oversized queries, too many parameters, missing or doubled template
// parameters, non-hex values and wrong lengths; parameters the template
// does not name are ignored (after the count bound).
func Parse(t *Template, raw string) (*Message, error) {
	if len(raw) > MaxQuery {
		return nil, inputErr(CodeQueryTooLarge, "", "query of %d bytes (at most %d)", len(raw), MaxQuery)
	}
	wanted := map[string]bool{}
	for _, p := range []string{t.PICCParam, t.UIDParam, t.CtrParam, t.FileParam, t.MACParam, tamperParam(t)} {
		if p != "" {
			wanted[p] = true
		}
	}
	got := map[string]param{}
	n, off := 0, 0
	for _, part := range strings.Split(raw, "&") {
		start := off
		off += len(part) + 1
		if part == "" {
			continue
		}
		if n++; n > MaxParams {
			return nil, inputErr(CodeTooManyParams, "", "more than %d parameters", MaxParams)
		}
		name, value, _ := strings.Cut(part, "=")
		if !wanted[name] {
			continue
		}
		if _, dup := got[name]; dup {
			return nil, inputErr(CodeDuplicateParam, name, "given more than once")
		}
		got[name] = param{value: value, start: start + len(name) + 1}
	}
	piccSize := 16
	if t.Mode == ModeLRP {
		piccSize = sdm.EncPICCDataSizeLRP
	}
	vals, err := roles(t, got, piccSize)
	if err != nil {
		return nil, err
	}
	m := &Message{}
	if t.PICCParam != "" {
		if m.EncPICC, err = hexParam(vals, t.PICCParam, rolePICC, piccSize, piccSize); err != nil {
			return nil, err
		}
	} else {
		if m.UID, err = hexParam(got, t.UIDParam, t.UIDParam, sdm.UIDSize, sdm.UIDSize); err != nil {
			return nil, err
		}
		ctr, err := hexParam(got, t.CtrParam, t.CtrParam, sdm.ReadCtrSize, sdm.ReadCtrSize)
		if err != nil {
			return nil, err
		}
		// Mirrored most significant byte first.
		m.Counter = uint32(ctr[0])<<16 | uint32(ctr[1])<<8 | uint32(ctr[2])
		if m.Counter == sdm.MaxReadCtr {
			return nil, inputErr(CodeCounterExhausted, t.CtrParam, "counter FFFFFF: the tag's read counter is exhausted")
		}
	}
	if t.FileParam != "" {
		if m.EncFile, err = hexParam(vals, t.FileParam, roleFile, 16, t.FileDataMax); err != nil {
			return nil, err
		}
		if len(m.EncFile)%16 != 0 {
			return nil, inputErr(CodeBadLength, t.FileParam, "%d bytes, not whole 16-byte blocks", len(m.EncFile))
		}
	}
	if m.MAC, err = hexParam(vals, t.MACParam, roleMAC, sdm.MACSize, sdm.MACSize); err != nil {
		return nil, err
	}
	if t.Tamper != nil && t.Tamper.Param != "" {
		p, ok := got[t.Tamper.Param]
		if !ok {
			return nil, inputErr(CodeMissingParam, t.Tamper.Param, "missing")
		}
		if len(p.value) != 2 || !isTamperChar(p.value[0]) || !isTamperChar(p.value[1]) {
			return nil, inputErr(CodeBadLength, t.Tamper.Param, "TagTamper status must be two of C, O, I, N")
		}
		m.Tamper = p.value
	}
	if t.MACInputFrom != "" {
		from, to := got[t.MACInputFrom].start, vals[roleMAC].start
		if t.MACInputFrom == t.FileParam {
			// SDMMACInputOffset points at the file data, also where it
			// shares its parameter with the PICC data.
			from = vals[roleFile].start
		}
		if from > to {
			return nil, inputErr(CodeParamOrder, t.MACInputFrom, "must come before %q, where the tag wrote it", t.MACParam)
		}
		m.MACInput = []byte(raw[from:to])
		if tp := tamperParam(t); tp != "" && (got[tp].start < from || got[tp].start > to) {
			// Outside the MAC input anyone could rewrite "OO" to "CC".
			return nil, inputErr(CodeParamOrder, tp, "must lie between %q and %q, where the SDMMAC covers it", t.MACInputFrom, t.MACParam)
		}
	}
	return m, nil
}

func isTamperChar(c byte) bool { return c == 'C' || c == 'O' || c == 'I' || c == 'N' }

// Roles of the values a tag mirrors into its URL.
const (
	rolePICC = "picc"
	roleFile = "file"
	roleMAC  = "mac"
)

// roles returns the values of the PICC data, file data and MAC by role,
// splitting a parameter they share (Template.checkShared): the PICC data
// has its fixed size, the MAC its 16 hex digits at the end, the file
// data is what lies between. A missing parameter stays absent (hexParam
// reports it).
func roles(t *Template, got map[string]param, piccSize int) (map[string]param, error) {
	out := map[string]param{}
	for role, name := range map[string]string{rolePICC: t.PICCParam, roleFile: t.FileParam, roleMAC: t.MACParam} {
		if p, ok := got[name]; ok && name != "" {
			out[role] = p
		}
	}
	if !t.shared(t.MACParam) {
		return out, nil
	}
	p, ok := got[t.MACParam]
	if !ok {
		return out, nil
	}
	head := 0
	if t.PICCParam == t.MACParam {
		head = 2 * piccSize
	}
	macAt := len(p.value) - 2*sdm.MACSize
	if macAt < head {
		return nil, inputErr(CodeBadLength, t.MACParam, "%d characters, too short for the data and the MAC it carries", len(p.value))
	}
	out[roleMAC] = param{value: p.value[macAt:], start: p.start + macAt}
	if t.PICCParam == t.MACParam {
		out[rolePICC] = param{value: p.value[:head], start: p.start}
	}
	if t.FileParam == t.MACParam {
		out[roleFile] = param{value: p.value[head:macAt], start: p.start + head}
	}
	return out, nil
}

// hexParam decodes a required hex value of min..max bytes, found under
// key in got and reported as parameter name.
func hexParam(got map[string]param, name, key string, min, max int) ([]byte, error) {
	p, ok := got[key]
	if !ok {
		return nil, inputErr(CodeMissingParam, name, "missing")
	}
	if len(p.value) < 2*min || len(p.value) > 2*max || len(p.value)%2 != 0 {
		if min == max {
			return nil, inputErr(CodeBadLength, name, "%d characters, want %d hex digits", len(p.value), 2*min)
		}
		return nil, inputErr(CodeBadLength, name, "%d characters, want %d to %d hex digits", len(p.value), 2*min, 2*max)
	}
	b, err := hex.DecodeString(p.value)
	if err != nil {
		return nil, inputErr(CodeNotHex, name, "not hexadecimal")
	}
	return b, nil
}
