// Package profile describes the card application a top-up talks to: AID,
// authentication generation, key numbers, file numbers and comm modes,
// value limits and the layout of the top-up log record. Several profiles
// may be configured side by side; the default follows the example
// stored-value application of NXP AN12113 section 3.3 (AID 0x014499).
package profile

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/personalize"
)

// Auth is the authentication (and secure messaging) generation.
type Auth string

// Supported authentication generations.
const (
	// AuthEV1 is AuthenticateAES (0xAA) with EV1 secure messaging.
	AuthEV1 Auth = "ev1"
	// AuthEV2 is AuthenticateEV2First (0x71) with EV2 secure messaging.
	AuthEV2 Auth = "ev2"
)

// Card generations as GetVersion reports them.
const (
	GenEV1 = "ev1"
	GenEV2 = "ev2"
	GenEV3 = "ev3"
)

// Errors returned by Validate and Load.
var (
	ErrInvalid        = errors.New("profile: invalid")
	ErrUnknownProfile = errors.New("profile: unknown profile")
)

// Profile is one card application layout.
type Profile struct {
	// Name identifies the profile in configuration and in the ledger.
	Name string `json:"name"`
	// AID is the application identifier as a number (0x014499); on the
	// wire it is sent least significant byte first.
	AID uint32 `json:"aid"`
	// Auth selects EV1 (AuthenticateAES) or EV2 (AuthenticateEV2First).
	Auth Auth `json:"auth"`
	// Generations lists the card generations (GetVersion) this profile
	// serves when one server serves a mixed fleet; empty means every
	// generation for an EV1 profile (EV2/EV3 cards keep AuthenticateAES)
	// and "ev2" and "ev3" for an EV2 one (EV1 cards lack EV2
	// authentication).
	Generations []string `json:"generations,omitempty"`
	// Currency is the ISO 4217 code of the value file's unit.
	Currency string `json:"currency"`

	// Key numbers inside the application.
	MasterKeyNo byte `json:"master_key_no"` // administration only, never used by the server
	ReadKeyNo   byte `json:"read_key_no"`   // balance lookups
	WriteKeyNo  byte `json:"write_key_no"`  // user data files (not used by top-ups)
	TopUpKeyNo  byte `json:"topup_key_no"`  // value file and top-up log

	// File numbers.
	InfoFile     byte `json:"info_file"`      // backup data file, card header
	UsageLogFile byte `json:"usage_log_file"` // cyclic record file written by terminals
	ValueFile    byte `json:"value_file"`
	TopUpLogFile byte `json:"topup_log_file"` // cyclic record file written by top-ups
	// TMACFile is the Transaction MAC file number; HasTMAC says it exists
	// (EV2/EV3 cards only).
	TMACFile byte `json:"tmac_file"`
	HasTMAC  bool `json:"has_tmac"`
	// CommitReaderID: the cards' Transaction MAC files require
	// CommitReaderID (their AppCommitReaderIDKey is the top-up key), so a
	// top-up sends it with the credit from the first tap. Each card's
	// authenticated TMAC file settings decide in the end: a card that
	// requires it although the profile does not say so costs one more
	// round in its first session.
	CommitReaderID bool `json:"commit_reader_id,omitempty"`

	// Comm modes of the files the server touches.
	ValueMode    desfire.CommMode `json:"value_mode"`
	TopUpLogMode desfire.CommMode `json:"topup_log_mode"`
	UsageLogMode desfire.CommMode `json:"usage_log_mode"`

	// Value file limits, in minor units.
	LowerLimit int32 `json:"lower_limit"`
	UpperLimit int32 `json:"upper_limit"`
	// MaxTopUp bounds one top-up's amount (0 means UpperLimit).
	MaxTopUp int32 `json:"max_topup"`

	// Log files: number of records (each record is RecordSize bytes).
	LogRecords  int `json:"log_records"`
	InfoFileLen int `json:"info_file_len"`

	// RandomUID: the cards show a random ID at anticollision (08 xx xx xx)
	// and a zero UID in GetVersion. A session authenticates first with
	// UIDKeyNo, an application key that is the same on every card (not
	// diversified; the key file entry says so) and opens no file, reads
	// the real UID with GetCardUID (CommMode.Full), and then authenticates
	// with the keys diversified from it. Locks, ledger and API key on the
	// real UID.
	RandomUID bool `json:"random_uid,omitempty"`
	UIDKeyNo  byte `json:"uid_key_no,omitempty"`

	// RollForward: after a top-up, a card whose top-up key is older than
	// the newest version configured gets the newest (ChangeKey of the
	// session's own key; the cards' key settings let each key change
	// itself). The new version is recorded before the ChangeKey leaves.
	RollForward bool `json:"roll_forward,omitempty"`

	// VerifyUID makes every session read GetCardUID over the secure
	// channel and compare it with the UID the key was diversified from.
	VerifyUID bool `json:"verify_uid"`
	// TerminalKeys, when set (EV2/EV3 only), makes issuance give every
	// file two access condition sets (NXP AN12113 section 3.1, Table 1):
	// set 1 with the terminals' keys, set 2 with the server's (ReadKeyNo,
	// TopUpKeyNo), so a top-up server needs none of the terminal keys.
	TerminalKeys *TerminalKeys `json:"terminal_keys,omitempty"`
}

// TerminalKeys are the key numbers terminals use under the first access
// condition set: Read reads the files, Write debits and writes them.
type TerminalKeys struct {
	Read  byte `json:"read"`
	Write byte `json:"write"`
}

// AN12113 returns the default profile: NXP AN12113's example stored-value
// application on an EV2/EV3 card (personalize.AN12113: AuthenticateEV2First,
// all files in CommMode.Full, with a Transaction MAC file).
func AN12113() Profile {
	p := FromLayout(personalize.AN12113())
	p.Currency = "EUR"
	p.MaxTopUp = 50_000
	p.VerifyUID = true
	return p
}

// AN12113EV1 is the same application on a DESFire EV1 card
// (personalize.AN12113EV1: AuthenticateAES and EV1 secure messaging, no
// Transaction MAC file), with no GetCardUID check (the UID is proven by
// the diversified key alone).
func AN12113EV1() Profile {
	p, ev2 := FromLayout(personalize.AN12113EV1()), AN12113()
	p.Currency, p.MaxTopUp = ev2.Currency, ev2.MaxTopUp
	return p
}

// FromLayout returns a profile with the card layout l (name, AID,
// generation, keys, files, modes, limits, record sizes) and nothing else
// set.
func FromLayout(l personalize.Layout) Profile {
	auth := AuthEV2
	if l.EV1 {
		auth = AuthEV1
	}
	return Profile{
		Name: l.Name, AID: l.AID, Auth: auth,
		MasterKeyNo: l.MasterKeyNo, ReadKeyNo: l.ReadKeyNo, WriteKeyNo: l.WriteKeyNo, TopUpKeyNo: l.TopUpKeyNo,
		InfoFile: l.InfoFile, UsageLogFile: l.UsageLogFile, ValueFile: l.ValueFile, TopUpLogFile: l.TopUpLogFile,
		TMACFile: l.TMACFile, HasTMAC: l.HasTMAC, CommitReaderID: l.CommitReaderID, RandomUID: l.UIDKey, UIDKeyNo: l.UIDKeyNo, RollForward: l.SelfChangeKeys,
		ValueMode: l.ValueMode, TopUpLogMode: l.TopUpLogMode, UsageLogMode: l.UsageLogMode,
		LowerLimit: l.LowerLimit, UpperLimit: l.UpperLimit,
		LogRecords: l.LogRecords, InfoFileLen: l.InfoFileLen,
	}
}

// Layout returns the card layout of the profile's application, as a card
// is personalised with it.
func (p *Profile) Layout() personalize.Layout {
	return personalize.Layout{
		Name: p.Name, AID: p.AID, EV1: p.Auth == AuthEV1,
		MasterKeyNo: p.MasterKeyNo, ReadKeyNo: p.ReadKeyNo, WriteKeyNo: p.WriteKeyNo, TopUpKeyNo: p.TopUpKeyNo,
		InfoFile: p.InfoFile, UsageLogFile: p.UsageLogFile, ValueFile: p.ValueFile, TopUpLogFile: p.TopUpLogFile,
		TMACFile: p.TMACFile, HasTMAC: p.HasTMAC, CommitReaderID: p.CommitReaderID, UIDKey: p.RandomUID, UIDKeyNo: p.UIDKeyNo, SelfChangeKeys: p.RollForward,
		ValueMode: p.ValueMode, TopUpLogMode: p.TopUpLogMode, UsageLogMode: p.UsageLogMode,
		LowerLimit: p.LowerLimit, UpperLimit: p.UpperLimit,
		RecordSize: RecordSize, LogRecords: p.LogRecords, InfoFileLen: p.InfoFileLen,
	}
}

// Serves reports whether the profile serves cards of generation gen.
func (p *Profile) Serves(gen string) bool {
	gens := p.Generations
	if len(gens) == 0 {
		gens = []string{GenEV2, GenEV3}
		if p.Auth == AuthEV1 {
			gens = []string{GenEV1, GenEV2, GenEV3}
		}
	}
	for _, g := range gens {
		if g == gen {
			return true
		}
	}
	return false
}

// AIDBytes returns the AID as sent on the wire (LSB first).
func (p *Profile) AIDBytes() []byte {
	return []byte{byte(p.AID), byte(p.AID >> 8), byte(p.AID >> 16)}
}

// MaxAmount is the largest single top-up the profile allows.
func (p *Profile) MaxAmount() int64 {
	if p.MaxTopUp > 0 {
		return int64(p.MaxTopUp)
	}
	return int64(p.UpperLimit)
}

var currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)

// Validate reports the first inconsistency in p.
func (p *Profile) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("profile %q: %s: %w", p.Name, fmt.Sprintf(format, a...), ErrInvalid)
	}
	switch {
	case p.Name == "":
		return bad("empty name")
	case p.AID == 0 || p.AID > 0xFFFFFF:
		return bad("AID %06X out of range", p.AID)
	case p.Auth != AuthEV1 && p.Auth != AuthEV2:
		return bad("auth %q is neither ev1 nor ev2", p.Auth)
	case !currencyRE.MatchString(p.Currency):
		return bad("currency %q is not an ISO 4217 code", p.Currency)
	case p.HasTMAC && p.Auth != AuthEV2:
		return bad("a Transaction MAC file needs an EV2/EV3 profile")
	case p.CommitReaderID && !p.HasTMAC:
		return bad("CommitReaderID needs a Transaction MAC file")
	case p.UpperLimit <= p.LowerLimit:
		return bad("upper limit %d not above lower limit %d", p.UpperLimit, p.LowerLimit)
	case p.MaxTopUp < 0:
		return bad("negative max top-up")
	case p.LogRecords < 2 || p.LogRecords > 64:
		return bad("log records %d out of 2..64", p.LogRecords)
	}
	for _, m := range []desfire.CommMode{p.ValueMode, p.TopUpLogMode, p.UsageLogMode} {
		if m != desfire.CommPlain && m != desfire.CommMAC && m != desfire.CommFull {
			return bad("comm mode %d", m)
		}
	}
	// A plain answer carries no MAC: the bridge could forge the value or
	// the log record that proves a credit, so nothing could be proven.
	if p.ValueMode == desfire.CommPlain {
		return bad("value file in CommMode.Plain: a bridge could forge its value; use MAC or Full")
	}
	if p.TopUpLogMode == desfire.CommPlain {
		return bad("top-up log in CommMode.Plain: a bridge could forge the record that proves a credit; use MAC or Full")
	}
	for _, g := range p.Generations {
		switch {
		case g != GenEV1 && g != GenEV2 && g != GenEV3:
			return bad("generation %q is none of ev1, ev2, ev3", g)
		case g == GenEV1 && p.Auth == AuthEV2:
			return bad("an EV2 profile cannot serve EV1 cards (no EV2 authentication)")
		}
	}
	keys := []byte{p.MasterKeyNo, p.ReadKeyNo, p.WriteKeyNo, p.TopUpKeyNo}
	for _, k := range keys {
		if k > 13 {
			return bad("key number %d above 13", k)
		}
	}
	if p.TopUpKeyNo == p.MasterKeyNo {
		return bad("the top-up key must not be the application master key")
	}
	if p.RandomUID {
		switch {
		case p.UIDKeyNo > 13:
			return bad("UID key number %d above 13", p.UIDKeyNo)
		case p.UIDKeyNo == p.MasterKeyNo || p.UIDKeyNo == p.ReadKeyNo || p.UIDKeyNo == p.WriteKeyNo || p.UIDKeyNo == p.TopUpKeyNo:
			return bad("the UID key of random-ID cards must be a key of its own (it is the same on every card)")
		case p.TerminalKeys != nil && (p.UIDKeyNo == p.TerminalKeys.Read || p.UIDKeyNo == p.TerminalKeys.Write):
			return bad("the UID key must not be a terminal key")
		}
	}
	if t := p.TerminalKeys; t != nil {
		switch {
		case p.Auth != AuthEV2:
			return bad("multiple access condition sets need an EV2/EV3 profile")
		case t.Read > 13 || t.Write > 13:
			return bad("terminal key number above 13")
		case t.Read == p.ReadKeyNo || t.Read == p.TopUpKeyNo || t.Write == p.ReadKeyNo || t.Write == p.TopUpKeyNo:
			return bad("terminal keys must differ from the server's read and top-up keys")
		case t.Read == p.MasterKeyNo || t.Write == p.MasterKeyNo:
			return bad("terminal keys must not be the application master key")
		}
	}
	return nil
}

// AN12113OTA is AN12113 with the multiple access condition sets of its
// section 3.1 (Table 1): terminals read with key 1 and debit or write
// with key 2 (set 1); the server reads and credits with key 3 only (set
// 2), so its key file needs neither terminal key. Issuance writes all of
// them (an issuing deployment holds the terminal keys).
func AN12113OTA() Profile {
	p := AN12113()
	p.Name = "an12113-ev2-ota"
	p.ReadKeyNo, p.WriteKeyNo, p.TopUpKeyNo = 3, 2, 3
	p.TerminalKeys = &TerminalKeys{Read: 1, Write: 2}
	return p
}

// Set is the configured profiles by name.
type Set map[string]Profile

// DefaultSet holds the two built-in profiles.
func DefaultSet() Set {
	ev2, ev1 := AN12113(), AN12113EV1()
	return Set{ev2.Name: ev2, ev1.Name: ev1}
}

// Get returns the named profile or ErrUnknownProfile.
func (s Set) Get(name string) (Profile, error) {
	p, ok := s[name]
	if !ok {
		return Profile{}, fmt.Errorf("%q: %w", name, ErrUnknownProfile)
	}
	return p, nil
}

// Load reads a JSON file holding a list of profiles, validates each and
// returns them with the built-in ones (a file entry replaces a built-in
// profile of the same name).
func Load(path string) (Set, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read profiles: %w", err)
	}
	var list []fileEntry
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("parse profiles %s: %w: %w", path, err, ErrInvalid)
	}
	set := DefaultSet()
	for _, e := range list {
		if err := e.check(); err != nil {
			return nil, err
		}
		if err := e.Validate(); err != nil {
			return nil, err
		}
		set[e.Name] = e.Profile
	}
	return set, nil
}

// fileEntry is one profile as a profiles file holds it. Two settings
// earlier files carried are accepted only where they agree with the one
// place they now live: the log record size is fixed (RecordSize), and the
// diversification system identifier is the key file's `system_id`.
type fileEntry struct {
	Profile
	RecordSize *int    `json:"record_size,omitempty"`
	SystemID   *string `json:"system_id,omitempty"`
}

func (e fileEntry) check() error {
	switch {
	case e.RecordSize != nil && *e.RecordSize != RecordSize:
		return fmt.Errorf("profile %q: record size %d, the top-up log record is %d bytes: %w", e.Name, *e.RecordSize, RecordSize, ErrInvalid)
	case e.SystemID != nil:
		return fmt.Errorf("profile %q: system_id belongs in the key file (its system_id is the one diversification uses): %w", e.Name, ErrInvalid)
	}
	return nil
}

// RecordSize is the size of one top-up log record.
const RecordSize = 16

// RefSize is the size of the top-up reference inside a log record.
const RefSize = 8

// LogRecord is one entry of the top-up log file: when, how much, and which
// ledger top-up wrote it, so that the card's own log proves a credit.
//
// Layout (16 bytes, little endian): Timestamp(4, Unix seconds) |
// Amount(4, signed minor units) | Ref(8, from the top-up's ID).
type LogRecord struct {
	Timestamp uint32
	Amount    int32
	Ref       [RefSize]byte
}

// Marshal encodes the record.
func (r LogRecord) Marshal() []byte {
	b := make([]byte, 0, RecordSize)
	b = binary.LittleEndian.AppendUint32(b, r.Timestamp)
	b = binary.LittleEndian.AppendUint32(b, uint32(r.Amount))
	return append(b, r.Ref[:]...)
}

// ErrRecord is returned for a log record of the wrong size.
var ErrRecord = errors.New("profile: log record must be 16 bytes")

// ParseLogRecord decodes a 16-byte record.
func ParseLogRecord(b []byte) (LogRecord, error) {
	if len(b) != RecordSize {
		return LogRecord{}, fmt.Errorf("%d bytes: %w", len(b), ErrRecord)
	}
	var r LogRecord
	r.Timestamp = binary.LittleEndian.Uint32(b)
	r.Amount = int32(binary.LittleEndian.Uint32(b[4:]))
	copy(r.Ref[:], b[8:])
	return r, nil
}

// ParseLogRecords splits the concatenated records ReadRecords returns.
func ParseLogRecords(b []byte) ([]LogRecord, error) {
	if len(b)%RecordSize != 0 {
		return nil, fmt.Errorf("%d bytes of records: %w", len(b), ErrRecord)
	}
	out := make([]LogRecord, 0, len(b)/RecordSize)
	for i := 0; i < len(b); i += RecordSize {
		r, err := ParseLogRecord(b[i : i+RecordSize])
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
