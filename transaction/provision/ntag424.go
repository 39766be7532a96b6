package provision

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/ntag424"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
)

// KindNTAG424 is the session kind of NTAG 424 DNA personalisation.
const KindNTAG424 = "provision_ntag424"

// NTAG424KeyName is the key-provider name of master key n of NTAG 424 DNA
// tags ("ntag424.k0" … "ntag424.k4"); per-tag keys are diversified from
// it with the tag's UID (AN10922), at the requested version.
func NTAG424KeyName(n byte) string { return keys.NTAG424KeyName(n) }

// ntagWriteChunk is the data of one WriteData in MAC mode: header 7 +
// data + MAC 8 fit one short frame of every reader.
const ntagWriteChunk = 32

// NTAG424Request is an operator's personalisation request.
type NTAG424Request struct {
	// Template is the SUN URL with {uid} {ctr} {picc} {enc} {mac}.
	Template string `json:"template"`
	// KeyVersion is the version of the per-tag keys to write (1..255),
	// present in the key provider for keys 0..4; 0 picks the current one
	// (the highest version held of all five).
	KeyVersion byte `json:"key_version"`
	// Lock makes the NDEF file and the capability container read-only for
	// good: write and read-write rights never (F), the CC's NDEF write
	// access FF. Key 0, held only by the server, keeps the change right.
	Lock bool `json:"lock"`
	// RandomID switches the tag's random ID on (SetConfiguration,
	// permanent): afterwards a reader sees a fresh 4-byte ID per tap.
	RandomID bool `json:"random_id,omitempty"`
	// TagTamper switches tamper detection on (SetConfiguration option 07,
	// NTAG 424 DNA TagTamper only; GetTTStatus right key 0). The tag then
	// mirrors its tamper status into the encrypted file data, so the
	// template needs {enc}: only there does the SDMMAC cover it; a SUN
	// template reads it with tamper.file_offset 0.
	TagTamper bool `json:"tag_tamper,omitempty"`
	// UID (hex, 7 bytes) names the tag when its reader shows a random ID:
	// the per-tag keys derive from the real UID, which GetCardUID then
	// proves. Needed to resume a tag whose random ID is already on, unless
	// the server finds it (the one tag of the tenant's failed random-ID
	// sessions left at step files; server randomIDCandidate).
	UID string `json:"uid,omitempty"`
	// Offsets, when set, move SDM mirrors away from where the template's
	// placeholders put them (validated: inside the file, no overlap).
	Offsets *ntag424.Offsets `json:"offsets,omitempty"`
	// SUNTemplate, when set, registers the finished tag under this SUN
	// verification template (Env.SUN), so that templates accepting only
	// registered tags (require_known) accept it.
	SUNTemplate string `json:"sun_template,omitempty"`
	// Tenant registers the tag for SUN as this tenant's (the session's
	// tenant, set by the server when it runs the session; default
	// tenant when empty).
	Tenant string `json:"-"`
}

// Plan is a validated request: the NDEF file and the final settings.
type Plan struct {
	Req    NTAG424Request
	Layout *ntag424.Layout
}

// PlanNTAG424 validates a request before anything is sent: the template
// (MAC placeholder, offsets inside the NDEF file and not overlapping, URL
// length) and the key version. Errors wrap ErrInvalid.
func PlanNTAG424(ctx context.Context, kp keys.Provider, req NTAG424Request) (*Plan, error) {
	if req.KeyVersion == ntag424.FactoryKeyVersion && kp != nil {
		var refs []keys.Ref
		for k := byte(0); k < ntag424.NumKeys; k++ {
			refs = append(refs, keys.Ref{Name: NTAG424KeyName(k)})
		}
		req.KeyVersion = currentVersion(kp, refs)
	}
	if req.KeyVersion == ntag424.FactoryKeyVersion {
		return nil, fmt.Errorf("no per-tag key version to write (ntag424.k0..k4 not in the key provider): %w", ErrInvalid)
	}
	l, err := ntag424.ParseTemplate(req.Template)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if req.Offsets != nil {
		if err := l.Override(*req.Offsets); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if req.TagTamper && (l.Settings.SDM == nil || l.Settings.SDM.Options&ntag424.SDMEncFileData == 0) {
		return nil, fmt.Errorf("tag_tamper needs {enc} in the template: the tamper status is authenticated only inside the encrypted file data: %w", ErrInvalid)
	}
	if req.UID != "" {
		if b, err := hex.DecodeString(req.UID); err != nil || len(b) != 7 {
			return nil, fmt.Errorf("uid %q must be 7 bytes of hex: %w", req.UID, ErrInvalid)
		}
	}
	if req.Lock {
		l.Settings.Access = desfire.NewAccessRights(desfire.AccessFree, desfire.AccessNever, desfire.AccessNever, 0)
	}
	if kp != nil {
		probe := []byte{0x04, 0, 0, 0, 0, 0, 0}
		for k := byte(0); k < ntag424.NumKeys; k++ {
			if _, err := kp.CardKey(ctx, keys.Ref{Name: NTAG424KeyName(k), Version: req.KeyVersion}, probe); err != nil {
				return nil, fmt.Errorf("key %d version %d: %w: %w", k, req.KeyVersion, ErrInvalid, err)
			}
		}
		if err := checkMetaReadKey(ctx, kp, l, req.KeyVersion); err != nil {
			return nil, err
		}
	}
	return &Plan{Req: req, Layout: l}, nil
}

// checkMetaReadKey refuses a template with encrypted PICC data ({picc})
// when the key provider diversifies the meta-read key per tag: a verifier
// must decrypt PICCData before it knows the UID, so no verifier could
// read the URLs such a tag writes. Two UIDs giving two keys prove it.
func checkMetaReadKey(ctx context.Context, kp keys.Provider, l *ntag424.Layout, v byte) error {
	s := l.Settings.SDM
	if s == nil || s.MetaRead >= ntag424.NumKeys {
		return nil
	}
	ref := keys.Ref{Name: NTAG424KeyName(s.MetaRead), Version: v}
	a, err := kp.CardKey(ctx, ref, []byte{0x04, 1, 2, 3, 4, 5, 6})
	if err != nil {
		return fmt.Errorf("meta-read key %d version %d: %w: %w", s.MetaRead, v, ErrInvalid, err)
	}
	b, err := kp.CardKey(ctx, ref, []byte{0x04, 6, 5, 4, 3, 2, 1})
	if err != nil {
		return fmt.Errorf("meta-read key %d version %d: %w: %w", s.MetaRead, v, ErrInvalid, err)
	}
	if !bytes.Equal(a, b) {
		return fmt.Errorf("%s version %d is diversified per tag, so no verifier could decrypt the {picc} data it encrypts; "+
			"give that key file entry \"diversify\": false (or use {uid}{ctr}): %w", NTAG424KeyName(s.MetaRead), v, ErrInvalid)
	}
	return nil
}

// tagKey returns key n at version v of the tag: all zero at the factory
// version, diversified from the named master key otherwise.
func (e *Env) tagKey(ctx context.Context, n, v byte, uid []byte) ([]byte, error) {
	if v == ntag424.FactoryKeyVersion {
		return make([]byte, 16), nil
	}
	k, err := e.Keys.CardKey(ctx, keys.Ref{Name: NTAG424KeyName(n), Version: v}, uid)
	if err != nil {
		return nil, fmt.Errorf("key %d version %d: %w", n, v, err)
	}
	return k, nil
}

// ProvisionNTAG424 personalises the NTAG 424 DNA on t, whose UID the
// bridge reports as uid, holding the tag's lock. See NTAG424 for the
// script.
func (e *Env) ProvisionNTAG424(ctx context.Context, t desfire.Transport, uid []byte, plan *Plan) Result {
	res := Result{Kind: KindNTAG424, CardUID: uidHex(uid)}
	if plan != nil && plan.Req.UID != "" {
		named, _ := hex.DecodeString(plan.Req.UID)
		if !ntag424.IsRandomID(uid) && uidHex(uid) != uidHex(named) {
			res.fail(fmt.Errorf("reader shows %s, request names %s: %w", uidHex(uid), uidHex(named), ledger.ErrCardMismatch))
			return res
		}
		uid, res.CardUID = named, uidHex(named)
	} else if ntag424.IsRandomID(uid) {
		res.fail(fmt.Errorf("the tag shows random ID %s; name its UID in the request: %w", uidHex(uid), ErrInvalid))
		return res
	}
	e.runLocked(ctx, "card:ntag424:"+uidHex(uid), &res, func(fence int64) error {
		return e.NTAG424(ctx, t, uid, plan, fence, &res)
	})
	return res
}

// NTAG424 runs the personalisation script under a held lock (fence):
//
//  1. the ledger record is read or created; a tag recorded as done is
//     refused;
//  2. ISO SELECT of the NDEF application by name, in the same exchange
//     as step 3's first command over a batching bridge;
//  3. AuthenticateEV2First with key 0 at the pending version first, then
//     the recorded one: success proves which one the tag holds;
//  4. one batch: GetCardUID (Full: proves the UID), GetKeyVersion 1..4
//     (MACed: proves each key's version), GetFileSettings of the NDEF
//     file (MACed: a locked tag is refused);
//  5. every key to change is recorded as pending, then one batch:
//     ChangeKey 1..4 (old value from the proven version), the NDEF file
//     in MAC mode, its content written with MACed answers, the SDM
//     settings, and when locking, the capability container made
//     read-only the same way;
//  6. key 0 is recorded as pending too and changed last in that batch
//     (its answer is a bare 9100, so it proves nothing); a new
//     authentication with the new key proves it.
//
// A tear anywhere leaves the ledger with at most one pending version per
// key; the next run finds the truth in steps 3 and 4 and resumes.
func (e *Env) NTAG424(ctx context.Context, t desfire.Transport, uid []byte, plan *Plan, fence int64, res *Result) error {
	if plan == nil || plan.Layout == nil {
		return fmt.Errorf("no plan: %w", ErrInvalid)
	}
	id := uidHex(uid)
	L := e.Ledger
	rec, fresh, err := e.begin(ctx, id, ledger.ProvisionNTAG424, ntag424.NumKeys, ntag424.FactoryKeyVersion, fence, res)
	if err != nil {
		return err
	}
	target := plan.Req.KeyVersion
	// 2. Select (a forgeable 9000: proves nothing), folded into the first
	// exchange with the authentication when the bridge batches; on its
	// own round trip otherwise.
	exchanges := 0
	if _, ok := t.(desfire.Batcher); !ok {
		exchanges++
	}
	card := desfire.NewCard(ntag424.SelectFirst(t))
	defer func() { res.Exchanges = exchanges + card.RoundTrips() }()

	// 3. Key 0: the pending version first, then the recorded one.
	k0 := rec.Keys[0]
	cands := []byte{k0.Version}
	if k0.Pending != nil {
		cands = []byte{*k0.Pending, k0.Version}
	}
	var authed byte
	var authErr error
	ok := false
	for _, v := range cands {
		key, err := e.tagKey(ctx, 0, v, uid)
		if err != nil {
			return err
		}
		authErr = card.Authenticate(ctx, desfire.NewAuthEV2First(0, key, e.Rand))
		if authErr == nil {
			authed, ok = v, true
			break
		}
		if !errors.Is(authErr, desfire.ErrAuthentication) {
			return fmt.Errorf("authenticate key 0: %w", authErr)
		}
	}
	if !ok {
		if fresh {
			return fmt.Errorf("factory key 0 refused: %w: %w", ErrNotBlank, authErr)
		}
		return fmt.Errorf("neither recorded key 0 version %v authenticates: %w: %w", cands, ErrKeyState, authErr)
	}
	if k0.Pending != nil || k0.Version != authed {
		if err := L.ConfirmKey(ctx, id, 0, authed, "auth", fence, e.now()); err != nil {
			return fmt.Errorf("confirm key 0: %w", err)
		}
	}

	// 4. Evidence of the UID, key versions and the NDEF file's state.
	p := card.Pipeline()
	uidStep, err := p.Add(desfire.GetCardUIDCmd())
	if err != nil {
		return err
	}
	var verSteps [ntag424.NumKeys]*desfire.Result
	for k := byte(1); k < ntag424.NumKeys; k++ {
		if verSteps[k], err = p.Add(ntag424.GetKeyVersionCmd(k, desfire.CommMAC)); err != nil {
			return err
		}
	}
	fsStep, err := p.Add(ntag424.GetFileSettingsCmd(ntag424.FileNDEF, desfire.CommMAC))
	if err != nil {
		return err
	}
	if err := p.Run(ctx); err != nil {
		return fmt.Errorf("read tag state: %w", err)
	}
	real, err := desfire.ParseCardUID(uidStep.Data)
	if err != nil {
		return err
	}
	if uidHex(real) != id {
		return fmt.Errorf("tag proved UID %s, bridge said %s: %w", uidHex(real), id, ledger.ErrCardMismatch)
	}
	ndef, err := desfire.ParseFileSettings(fsStep.Data)
	if err != nil {
		return fmt.Errorf("NDEF file settings: %w", err)
	}
	if fresh && (ndef.Access.Write() == desfire.AccessNever || ndef.Access.Change() != 0) {
		return fmt.Errorf("NDEF file access %04X: %w", uint16(ndef.Access), ErrLocked)
	}
	// Decide every key before writing anything.
	var change []byte
	var proven [ntag424.NumKeys]byte
	for k := byte(1); k < ntag424.NumKeys; k++ {
		v := verSteps[k].Data[0]
		ks := rec.Keys[k]
		switch {
		case v == ks.Version:
		case ks.Pending != nil && v == *ks.Pending:
		default:
			if fresh {
				return fmt.Errorf("key %d at version %d: %w", k, v, ErrNotBlank)
			}
			return fmt.Errorf("key %d at version %d, ledger has %d (pending %v): %w", k, v, ks.Version, ks.Pending, ErrKeyState)
		}
		proven[k] = v
		if v != target {
			change = append(change, k)
		}
	}
	for k := byte(1); k < ntag424.NumKeys; k++ {
		ks := rec.Keys[k]
		if ks.Version != proven[k] || ks.Pending != nil {
			if err := L.ConfirmKey(ctx, id, k, proven[k], "mac", fence, e.now()); err != nil {
				return fmt.Errorf("confirm key %d: %w", k, err)
			}
		}
	}

	// TagTamper before any key or file is written: a plain NTAG 424 DNA
	// refuses option 07 (card_error) and stays as it was. The answer is
	// MACed, so success is the tag's word; a retry sets it again.
	if plan.Req.TagTamper {
		cfg := []byte{ntag424.TTEnable, 0}
		if _, err := card.Exec(ctx, ntag424.SetConfigurationCmd(ntag424.ConfigTagTamper, cfg)); err != nil {
			return fmt.Errorf("switch tag tamper on (is this an NTAG 424 DNA TagTamper?): %w", err)
		}
		res.Created = append(res.Created, "tag_tamper")
	}

	// 5. Write ahead, then one batch.
	for _, k := range change {
		if err := L.IntendKey(ctx, id, k, proven[k], target, fence, e.now()); err != nil {
			return fmt.Errorf("record key %d version %d: %w", k, target, err)
		}
	}
	p = card.Pipeline()
	var keySteps []*desfire.Result
	for _, k := range change {
		oldKey, err := e.tagKey(ctx, k, proven[k], uid)
		if err != nil {
			return err
		}
		newKey, err := e.tagKey(ctx, k, target, uid)
		if err != nil {
			return err
		}
		cmd, err := ntag424.ChangeKeyCmd(k, newKey, oldKey, target)
		if err != nil {
			return err
		}
		s, err := p.Add(cmd)
		if err != nil {
			return err
		}
		keySteps = append(keySteps, s)
	}
	step := rec.Step
	var fileSteps []*desfire.Result
	if step == ledger.StepStarted || step == ledger.StepKeys {
		if fileSteps, err = addFiles(p, plan); err != nil {
			return err
		}
	}
	// Key 0 rides last in the same batch, recorded pending first. Its
	// answer is a bare 9100 (the tag ends the session), so only the
	// authentication with the new key below proves it.
	var newKey0 []byte
	if authed != target {
		if newKey0, err = e.tagKey(ctx, 0, target, uid); err != nil {
			return err
		}
		cmd, err := ntag424.ChangeKeyCmd(0, newKey0, nil, target)
		if err != nil {
			return err
		}
		if err := L.IntendKey(ctx, id, 0, authed, target, fence, e.now()); err != nil {
			return fmt.Errorf("record key 0 version %d: %w", target, err)
		}
		if _, err := p.Add(cmd); err != nil {
			return err
		}
	}
	runErr := p.Run(ctx)
	if err := e.keysChanged(ctx, id, change, func(i int) bool { return i < len(keySteps) && keySteps[i].Done }, target, fence, res); err != nil {
		return err
	}
	if runErr != nil {
		return fmt.Errorf("personalise: %w", runErr)
	}
	if step == ledger.StepStarted {
		if err := L.AdvanceProvision(ctx, id, step, ledger.StepKeys, fence, e.now()); err != nil {
			return err
		}
		step = ledger.StepKeys
	}
	if step == ledger.StepKeys {
		for _, s := range fileSteps {
			if !s.Done {
				return fmt.Errorf("file step unverified: %w", desfire.ErrNotExecuted)
			}
		}
		if err := L.AdvanceProvision(ctx, id, step, ledger.StepFiles, fence, e.now()); err != nil {
			return err
		}
		step = ledger.StepFiles
		res.Created = append(res.Created, "ndef_file", "sdm_settings")
		if plan.Req.Lock {
			res.Created = append(res.Created, "lock")
		}
	}
	res.Step = step

	// 6. Key 0, changed last in the batch, proven by authenticating with it.
	if newKey0 != nil {
		if err := card.Authenticate(ctx, desfire.NewAuthEV2First(0, newKey0, e.Rand)); err != nil {
			return fmt.Errorf("authenticate with the new key 0: %w", err)
		}
		if err := L.ConfirmKey(ctx, id, 0, target, "auth", fence, e.now()); err != nil {
			return fmt.Errorf("confirm key 0: %w", err)
		}
		res.KeysChanged = append(res.KeysChanged, 0)
	}
	if plan.Req.RandomID {
		// Last: from the next activation the reader sees a random ID, so
		// everything the ledger needs is recorded first. Its answer is
		// MACed; a tear leaves step files and a retry (naming the UID)
		// sets it again.
		if _, err := card.Exec(ctx, ntag424.SetConfigurationCmd(ntag424.ConfigPICC, []byte{ntag424.PICCUseRandomID})); err != nil {
			return fmt.Errorf("switch random ID on: %w", err)
		}
		res.Created = append(res.Created, "random_id")
	}
	if plan.Req.SUNTemplate != "" {
		if e.SUN == nil {
			return fmt.Errorf("sun_template %q without a SUN store: %w", plan.Req.SUNTemplate, ErrInvalid)
		}
		// Idempotent: a retry after a tear registers again.
		tenant := plan.Req.Tenant
		if tenant == "" {
			tenant = ledger.DefaultTenant
		}
		if err := e.SUN.RegisterSUNTag(ctx, id, plan.Req.SUNTemplate, tenant, e.now()); err != nil {
			return fmt.Errorf("register for SUN: %w", err)
		}
		res.Created = append(res.Created, "sun_registration")
	}
	if err := L.AdvanceProvision(ctx, id, step, ledger.StepDone, fence, e.now()); err != nil {
		return err
	}
	res.Step = ledger.StepDone
	return nil
}

// addFiles adds the NDEF file (and, when locking, the capability
// container) to p: the file is switched to MAC mode with key 0 writing,
// written in chunks whose answers are MACed, then given its final
// settings. Every answer is MACed, so each step is card-authenticated.
func addFiles(p *desfire.Pipeline, plan *Plan) ([]*desfire.Result, error) {
	var out []*desfire.Result
	add := func(cmd *desfire.Command, err error) error {
		if err != nil {
			return err
		}
		s, err := p.Add(cmd)
		if err != nil {
			return err
		}
		out = append(out, s)
		return nil
	}
	open := ntag424.FileSettings{Mode: desfire.CommMAC, Access: desfire.NewAccessRights(desfire.AccessFree, 0, 0, 0)}
	if err := add(ntag424.ChangeFileSettingsCmd(ntag424.FileNDEF, open)); err != nil {
		return nil, err
	}
	f := plan.Layout.File
	for off := 0; off < len(f); off += ntagWriteChunk {
		chunk := f[off:min(off+ntagWriteChunk, len(f))]
		if err := add(ntag424.WriteDataCmd(ntag424.FileNDEF, uint32(off), chunk, desfire.CommMAC), nil); err != nil {
			return nil, err
		}
	}
	if err := add(ntag424.ChangeFileSettingsCmd(ntag424.FileNDEF, plan.Layout.Settings)); err != nil {
		return nil, err
	}
	if !plan.Req.Lock {
		return out, nil
	}
	if err := add(ntag424.ChangeFileSettingsCmd(ntag424.FileCC, open)); err != nil {
		return nil, err
	}
	if err := add(ntag424.WriteDataCmd(ntag424.FileCC, ntag424.CCWriteAccessOffset, []byte{0xFF}, desfire.CommMAC), nil); err != nil {
		return nil, err
	}
	locked := ntag424.FileSettings{Access: desfire.NewAccessRights(desfire.AccessFree, desfire.AccessNever, desfire.AccessNever, 0)}
	if err := add(ntag424.ChangeFileSettingsCmd(ntag424.FileCC, locked)); err != nil {
		return nil, err
	}
	return out, nil
}
