package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

// KindIssue is the session kind of DESFire card issuance.
const KindIssue = "issue"

// IssueRequest is an operator's issuance request.
type IssueRequest struct {
	// Profile names the card profile whose application is created.
	Profile string `json:"profile"`
	// Initial is the value file's starting balance (minor units).
	Initial int32 `json:"initial"`
	// KeyVersion is the version of the application keys (1..255); 0
	// picks the current one (the highest version held of all of them).
	KeyVersion byte `json:"key_version"`
}

// IssuePlan is a validated issuance request.
type IssuePlan struct {
	Req     IssueRequest
	Profile profile.Profile
}

// PlanIssue validates an issuance request before anything is sent: a
// known profile, an initial value inside its limits, and every key the
// issuance writes present in the key provider. Errors wrap ErrInvalid.
func PlanIssue(ctx context.Context, kp keys.Provider, set profile.Set, req IssueRequest) (*IssuePlan, error) {
	p, err := set.Get(req.Profile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if req.KeyVersion == 0 && kp != nil {
		var refs []keys.Ref
		for _, no := range issueKeys(p) {
			refs = append(refs, keys.Ref{AID: p.AID, KeyNo: no})
		}
		if p.HasTMAC {
			refs = append(refs, keys.Ref{AID: p.AID, Name: keys.TMACName})
		}
		req.KeyVersion = currentVersion(kp, refs)
	}
	if req.KeyVersion == 0 {
		return nil, fmt.Errorf("no key version to write for %s: %w", p.Name, ErrInvalid)
	}
	if req.Initial < p.LowerLimit || req.Initial > p.UpperLimit {
		return nil, fmt.Errorf("initial value %d outside %d..%d: %w", req.Initial, p.LowerLimit, p.UpperLimit, ErrInvalid)
	}
	if kp != nil {
		probe := []byte{0x04, 0, 0, 0, 0, 0, 0}
		refs := []keys.Ref{}
		for _, no := range issueKeys(p) {
			refs = append(refs, keys.Ref{AID: p.AID, KeyNo: no, Version: req.KeyVersion})
		}
		if p.HasTMAC {
			refs = append(refs, keys.Ref{AID: p.AID, Name: keys.TMACName, Version: req.KeyVersion})
		}
		for _, r := range refs {
			if _, err := kp.CardKey(ctx, r, probe); err != nil {
				return nil, fmt.Errorf("%s: %w: %w", r, ErrInvalid, err)
			}
		}
	}
	return &IssuePlan{Req: req, Profile: p}, nil
}

// issueKeys are the application keys issuance sets, key 0 (master) last.
func issueKeys(p profile.Profile) []byte {
	var out []byte
	all := []byte{p.ReadKeyNo, p.WriteKeyNo, p.TopUpKeyNo}
	if t := p.TerminalKeys; t != nil {
		all = append(all, t.Read, t.Write)
	}
	for _, k := range all {
		if k != p.MasterKeyNo && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return append(out, p.MasterKeyNo)
}

// issueKeyCount is the number of keys the application is created with
// (AES, keys 0..4: the profile's four and a spare).
const issueKeyCount = 5

var blankKey = make([]byte, 16)

// IssueDESFire issues the card on t (UID uid as the bridge reports it)
// holding the card's lock; see Issue.
func (e *Env) IssueDESFire(ctx context.Context, t desfire.Transport, uid []byte, plan *IssuePlan) Result {
	res := Result{Kind: KindIssue, CardUID: uidHex(uid)}
	e.runLocked(ctx, fmt.Sprintf("card:%06X:%s", plan.Profile.AID, uidHex(uid)), &res, func(fence int64) error {
		return e.Issue(ctx, t, uid, plan, fence, &res)
	})
	return res
}

// Issue creates the profile's application on a blank DESFire EV2/EV3 (or,
// for an EV1 profile, EV1) card, tear-safe:
//
//  1. PICC level: select, authenticate with the blank PICC master key,
//     GetCardUID (enciphered: proves the UID the keys are diversified
//     from) and GetApplicationIDs (MACed): an application of the profile's AID that
//     the ledger did not create must have blank keys, or the card is
//     refused (not_blank) before anything is written;
//  2. CreateApplication when absent (MACed answer; its keys are blank,
//     version 0, which the ledger already records);
//  3. application level: authenticate key 0 with the pending version
//     first, then the recorded one; GetKeyVersion of every other key
//     (MACed);
//  4. each key to change is recorded pending, then changed (MACed
//     answer proves it);
//  5. GetFileIDs (MACed); every missing file is created (value file with
//     the initial value, logs, info file, Transaction MAC file on EV2);
//  6. the master key recorded pending, changed last in that batch,
//     proven by authenticating with it.
func (e *Env) Issue(ctx context.Context, t desfire.Transport, uid []byte, plan *IssuePlan, fence int64, res *Result) error {
	if plan == nil {
		return fmt.Errorf("no plan: %w", ErrInvalid)
	}
	p, target := plan.Profile, plan.Req.KeyVersion
	id := uidHex(uid)
	L := e.Ledger
	rec, fresh, err := e.begin(ctx, id, ledger.ProvisionDESFire, issueKeyCount, 0, fence, res)
	if err != nil {
		return err
	}
	card := desfire.NewCard(t)
	defer func() { res.Exchanges = card.RoundTrips() }()
	auth := func(no byte, key []byte) desfire.Authenticator {
		if p.Auth == profile.AuthEV1 {
			a, err := desfire.NewAuthAES(no, key, e.Rand)
			if err != nil {
				return nil
			}
			return a
		}
		return desfire.NewAuthEV2First(no, key, e.Rand)
	}
	key := func(no, v byte) ([]byte, error) {
		if v == 0 {
			return blankKey, nil
		}
		k, err := e.Keys.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: no, Version: v}, uid)
		if err != nil {
			return nil, fmt.Errorf("key %d version %d: %w", no, v, err)
		}
		return k, nil
	}

	// 1–2. PICC level.
	if err := selectAuth(ctx, card, []byte{0, 0, 0}, auth(0, blankKey)); err != nil {
		if errors.Is(err, desfire.ErrAuthentication) {
			return fmt.Errorf("blank PICC master key refused: %w: %w", ErrNotBlank, err)
		}
		return fmt.Errorf("authenticate PICC: %w", err)
	}
	// The real UID (enciphered under the PICC session) and the
	// application list (MACed), before anything is written.
	// The expected length keeps an EV1 enciphered answer unambiguous (a
	// UID whose CRC starts with 00 would also verify one byte longer).
	uidCmd := desfire.GetCardUIDCmd()
	uidCmd.RespLen = len(uid)
	picc, err := runBatched(ctx, card, []*desfire.Command{uidCmd, desfire.GetApplicationIDsCmd(desfire.CommMAC)})
	if err != nil {
		return fmt.Errorf("read card UID and applications: %w", err)
	}
	real, err := desfire.ParseCardUID(picc[0].Data)
	if err != nil {
		return fmt.Errorf("card UID: %w", err)
	}
	if uidHex(real) != id {
		return fmt.Errorf("card proved UID %s, bridge said %s: %w", uidHex(real), id, ledger.ErrCardMismatch)
	}
	aids, err := desfire.ParseApplicationIDs(picc[1].Data)
	if err != nil {
		return fmt.Errorf("list applications: %w", err)
	}
	present := false
	for _, a := range aids {
		if string(a) == string(p.AIDBytes()) {
			present = true
		}
	}
	if !present {
		if !fresh {
			return fmt.Errorf("application %06X missing although the ledger has keys for it: %w", p.AID, ErrKeyState)
		}
		// KeySett1 0x0B: master key changeable, configuration changeable,
		// create/delete and listing need the master key; AES, 5 keys.
		if err := card.CreateApplication(ctx, p.AIDBytes(), 0x0B, 0x80|issueKeyCount); err != nil {
			return fmt.Errorf("create application: %w", err)
		}
		res.Created = append(res.Created, fmt.Sprintf("application %06X", p.AID))
	}

	// 3. Application level: key 0 from the evidence.
	m := p.MasterKeyNo
	k0 := rec.Keys[m]
	cands := []byte{k0.Version}
	if k0.Pending != nil {
		cands = []byte{*k0.Pending, k0.Version}
	}
	var authed byte
	var authErr error
	ok := false
	for _, v := range cands {
		k, err := key(m, v)
		if err != nil {
			return err
		}
		if authErr = selectAuth(ctx, card, p.AIDBytes(), auth(m, k)); authErr == nil {
			authed, ok = v, true
			break
		}
		if !errors.Is(authErr, desfire.ErrAuthentication) {
			return fmt.Errorf("authenticate application key %d: %w", m, authErr)
		}
	}
	if !ok {
		if fresh {
			return fmt.Errorf("application %06X exists with another master key: %w: %w", p.AID, ErrNotBlank, authErr)
		}
		return fmt.Errorf("neither recorded master key version %v authenticates: %w: %w", cands, ErrKeyState, authErr)
	}
	if k0.Pending != nil || k0.Version != authed {
		if err := L.ConfirmKey(ctx, id, m, authed, "auth", fence, e.now()); err != nil {
			return fmt.Errorf("confirm key %d: %w", m, err)
		}
	}

	// 4. One batch of evidence: the other keys' versions and the file
	// list, all answered under the session MAC.
	others := issueKeys(p)
	others = others[:len(others)-1]
	var reads []*desfire.Command
	for _, no := range others {
		reads = append(reads, ntag424GetKeyVersion(no))
	}
	reads = append(reads, desfire.GetFileIDsCmd(desfire.CommMAC))
	rs, err := runBatched(ctx, card, reads)
	if err != nil {
		return fmt.Errorf("read key versions and files: %w", err)
	}
	have := rs[len(rs)-1].Data
	if len(have) > 32 {
		return fmt.Errorf("file IDs: %d files: %w", len(have), desfire.ErrLongResponse)
	}
	var change []byte
	proven := map[byte]byte{}
	for i, no := range others {
		v := rs[i].Data[0]
		ks := rec.Keys[no]
		if v != ks.Version && (ks.Pending == nil || v != *ks.Pending) {
			if fresh {
				return fmt.Errorf("key %d at version %d: %w", no, v, ErrNotBlank)
			}
			return fmt.Errorf("key %d at version %d, ledger has %d (pending %v): %w", no, v, ks.Version, ks.Pending, ErrKeyState)
		}
		proven[no] = v
		if v != target {
			change = append(change, no)
		}
	}
	for _, no := range others {
		if ks := rec.Keys[no]; ks.Pending != nil || ks.Version != proven[no] {
			if err := L.ConfirmKey(ctx, id, no, proven[no], "mac", fence, e.now()); err != nil {
				return fmt.Errorf("confirm key %d: %w", no, err)
			}
		}
	}

	// 5. Write ahead, then one batch: ChangeKey of each key to change and
	// the missing files.
	build := desfire.EV2ChangeKey
	if p.Auth == profile.AuthEV1 {
		build = desfire.EV1ChangeKey
	}
	var cmds []*desfire.Command
	for _, no := range change {
		oldKey, err := key(no, proven[no])
		if err != nil {
			return err
		}
		newKey, err := key(no, target)
		if err != nil {
			return err
		}
		cmd, err := build(no, m, newKey, oldKey, target)
		if err != nil {
			return fmt.Errorf("change key %d: %w", no, err)
		}
		cmds = append(cmds, cmd)
	}
	step := rec.Step
	var fileNames []string
	if step == ledger.StepStarted || step == ledger.StepKeys {
		fcmds, names, err := e.fileCmds(ctx, p, plan.Req, uid, have)
		if err != nil {
			return err
		}
		cmds, fileNames = append(cmds, fcmds...), names
	}
	for _, no := range change {
		if err := L.IntendKey(ctx, id, no, proven[no], target, fence, e.now()); err != nil {
			return fmt.Errorf("record key %d version %d: %w", no, target, err)
		}
	}
	// The master key rides last (recorded pending first); its answer
	// carries no MAC, so only the authentication with it below proves it.
	var newMaster []byte
	if authed != target {
		if newMaster, err = key(m, target); err != nil {
			return err
		}
		cmd, err := build(m, m, newMaster, nil, target)
		if err != nil {
			return fmt.Errorf("change master key: %w", err)
		}
		if err := L.IntendKey(ctx, id, m, authed, target, fence, e.now()); err != nil {
			return fmt.Errorf("record key %d version %d: %w", m, target, err)
		}
		cmds = append(cmds, cmd)
	}
	rs, runErr := runBatched(ctx, card, cmds)
	if err := e.keysChanged(ctx, id, change, func(i int) bool { return i < len(rs) && rs[i].Done }, target, fence, res); err != nil {
		return err
	}
	if runErr != nil {
		return fmt.Errorf("issue: %w", runErr)
	}
	if step == ledger.StepStarted {
		if err := L.AdvanceProvision(ctx, id, step, ledger.StepKeys, fence, e.now()); err != nil {
			return err
		}
		step = ledger.StepKeys
	}
	if step == ledger.StepKeys {
		res.Created = append(res.Created, fileNames...)
		if err := L.AdvanceProvision(ctx, id, step, ledger.StepFiles, fence, e.now()); err != nil {
			return err
		}
		step = ledger.StepFiles
	}
	res.Step = step

	// 6. The master key, changed last in the batch, proven by
	// authenticating with it.
	if newMaster != nil {
		card.Deauthenticate()
		if err := card.Authenticate(ctx, auth(m, newMaster)); err != nil {
			return fmt.Errorf("authenticate with the new master key: %w", err)
		}
		if err := L.ConfirmKey(ctx, id, m, target, "auth", fence, e.now()); err != nil {
			return fmt.Errorf("confirm key %d: %w", m, err)
		}
		res.KeysChanged = append(res.KeysChanged, m)
	}
	if err := L.AdvanceProvision(ctx, id, step, ledger.StepDone, fence, e.now()); err != nil {
		return err
	}
	res.Step = ledger.StepDone
	return nil
}

// access encodes Read, Write, ReadWrite, Change as sent.
func access(r, w, rw, ch byte) []byte { return []byte{rw<<4 | ch, r<<4 | w} }

// fileCmds builds the creation of the profile's files that the card does
// not list (a file created by a torn session is kept: its creation
// answer may have been lost, but GetFileIDs under the session MAC shows
// it). Every creation is answered under the session MAC.
func (e *Env) fileCmds(ctx context.Context, p profile.Profile, req IssueRequest, uid []byte, have []byte) ([]*desfire.Command, []string, error) {
	m, r, w, tk := p.MasterKeyNo, p.ReadKeyNo, p.WriteKeyNo, p.TopUpKeyNo
	const never = 0xF
	mode := desfire.CommMAC
	type file struct {
		no    byte
		what  string
		comm  desfire.CommMode
		build func() (*desfire.Command, error)
		// set1 is the access condition set the file is created with; set2,
		// with TerminalKeys, the server's set added by ChangeFileSettings.
		set1, set2 []byte
	}
	// One access condition set (single-set profiles), or the AN12113
	// Table 1 split: terminals (set 1) and server (set 2).
	info, usage, value, topup := access(r, w, w, m), access(r, r, r, m), access(r, tk, tk, m), access(r, tk, tk, m)
	var info2, usage2, value2, topup2 []byte
	if t := p.TerminalKeys; t != nil {
		info, info2 = access(t.Read, t.Write, t.Write, m), access(r, never, never, m)
		usage, usage2 = access(t.Read, t.Write, t.Write, m), access(r, never, never, m)
		// Terminals debit (W) but never credit (RW, which Credit needs, is
		// F in their set); only the server's top-up key credits.
		value, value2 = access(t.Read, t.Write, never, m), access(r, never, tk, m)
		topup, topup2 = access(t.Read, never, never, m), access(r, tk, tk, m)
	}
	files := []file{
		{p.InfoFile, "info file", desfire.CommFull, func() (*desfire.Command, error) {
			return desfire.CreateBackupDataFileCmd(desfire.DataFile{FileNo: p.InfoFile, CommSett: byte(desfire.CommFull), Access: info, Size: uint32(p.InfoFileLen)}, mode)
		}, info, info2},
		{p.UsageLogFile, "usage log", p.UsageLogMode, func() (*desfire.Command, error) {
			return desfire.CreateCyclicRecordFileCmd(desfire.RecordFile{FileNo: p.UsageLogFile, CommSett: byte(p.UsageLogMode), Access: usage, RecordSize: profile.RecordSize, MaxRecords: uint32(p.LogRecords)}, mode)
		}, usage, usage2},
		{p.ValueFile, "value file", p.ValueMode, func() (*desfire.Command, error) {
			return desfire.CreateValueFileCmd(desfire.ValueFile{FileNo: p.ValueFile, CommSett: byte(p.ValueMode), Access: value, Lower: p.LowerLimit, Upper: p.UpperLimit, Value: req.Initial}, mode)
		}, value, value2},
		{p.TopUpLogFile, "top-up log", p.TopUpLogMode, func() (*desfire.Command, error) {
			return desfire.CreateCyclicRecordFileCmd(desfire.RecordFile{FileNo: p.TopUpLogFile, CommSett: byte(p.TopUpLogMode), Access: topup, RecordSize: profile.RecordSize, MaxRecords: uint32(p.LogRecords)}, mode)
		}, topup, topup2},
	}
	if p.HasTMAC {
		files = append(files, file{no: p.TMACFile, what: "transaction MAC file", comm: desfire.CommPlain, build: func() (*desfire.Command, error) {
			tmk, err := e.Keys.CardKey(ctx, keys.Ref{AID: p.AID, Name: keys.TMACName, Version: req.KeyVersion}, uid)
			if err != nil {
				return nil, err
			}
			return desfire.CreateTransactionMACFileCmd(p.TMACFile, byte(desfire.CommPlain), access(r, 0xF, 0xF, m), tmk, req.KeyVersion, true)
		}})
	}
	var cmds []*desfire.Command
	var names []string
	for _, f := range files {
		if !slices.Contains(have, f.no) {
			cmd, err := f.build()
			if err != nil {
				return nil, nil, fmt.Errorf("create %s: %w", f.what, err)
			}
			cmds = append(cmds, cmd)
			names = append(names, fmt.Sprintf("file %d (%s)", f.no, f.what))
		}
		if f.set2 != nil {
			// FileOption (comm | 80: additional sets) ‖ set 1 ‖ 01 ‖ set 2;
			// sent for every file, created now or by a torn session.
			settings := append(append([]byte{byte(f.comm) | 0x80}, f.set1...), 1)
			cmds = append(cmds, desfire.ChangeFileSettingsCmd(f.no, append(settings, f.set2...), desfire.CommFull))
			names = append(names, fmt.Sprintf("file %d access sets (terminal, server)", f.no))
		}
	}
	return cmds, names, nil
}

// ntag424GetKeyVersion asks for a key's version under the session MAC.
func ntag424GetKeyVersion(no byte) *desfire.Command {
	return &desfire.Command{Code: desfire.CmdGetKeyVersion, Header: []byte{no}, Mode: desfire.CommMAC, RespMode: desfire.CommMAC,
		RespLen: 1, Name: fmt.Sprintf("get version of key %d", no)}
}

// runBatched sends cmds in as few exchanges as secure messaging allows:
// each pipeline takes commands until one cannot be sealed ahead (EV1,
// behind an unpredictable answer), runs, and the next one starts there.
// It returns the steps run so far and the first error.
func runBatched(ctx context.Context, card *desfire.Card, cmds []*desfire.Command) ([]*desfire.Result, error) {
	var out []*desfire.Result
	for i := 0; i < len(cmds); {
		p := card.Pipeline()
		for i < len(cmds) {
			r, err := p.Add(cmds[i])
			if errors.Is(err, desfire.ErrNotPipelinable) && p.Len() > 0 {
				break
			}
			if err != nil {
				return out, err
			}
			out = append(out, r)
			i++
		}
		if err := p.Run(ctx); err != nil {
			return out, err
		}
	}
	return out, nil
}

// selectAuth selects an application and authenticates in two exchanges:
// [SelectApplication, first authentication frame] · [second frame]. A
// wrong key fails with the card's 91AE (desfire.ErrAuthentication).
func selectAuth(ctx context.Context, card *desfire.Card, aid []byte, a desfire.Authenticator) error {
	if a == nil {
		return fmt.Errorf("no authenticator: %w", desfire.ErrParameter)
	}
	p := card.Pipeline()
	if _, err := p.Add(desfire.SelectApplicationCmd(aid)); err != nil {
		return err
	}
	code, payload := a.Start()
	var second []byte
	if _, err := p.AddRaw(code, payload, []uint16{0x91AF}, func(status byte, data []byte) error {
		var err error
		second, err = a.Respond(status, data)
		return err
	}); err != nil {
		return err
	}
	if err := p.Run(ctx); err != nil {
		return fmt.Errorf("select %X and authenticate: %w", aid, err)
	}
	p = card.Pipeline()
	if _, err := p.AddRaw(desfire.CmdAdditionalFrame, second, nil, func(status byte, data []byte) error {
		ch, err := a.Finish(status, data)
		if err != nil {
			return err
		}
		card.SetChannel(ch)
		return nil
	}); err != nil {
		return err
	}
	if err := p.Run(ctx); err != nil {
		return fmt.Errorf("authenticate: %w", err)
	}
	return nil
}
