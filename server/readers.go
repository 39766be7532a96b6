package server

import (
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
)

// The registered readers of the operator API (tenant-scoped).

type readerView struct {
	ID              string     `json:"id"`
	DESFireReaderID string     `json:"desfire_reader_id,omitempty"`
	Location        string     `json:"location"`
	Online          bool       `json:"online"`
	AgentSeenAt     *time.Time `json:"agent_seen_at,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
	// AgentCredential is returned once, by POST /v1/readers.
	AgentCredential string `json:"agent_credential,omitempty"`
}

func (s *Server) viewReader(r ledger.Reader) readerView {
	v := readerView{ID: r.ID, Location: r.Location, Online: s.o.Service.ReaderOnline(r), CreatedAt: r.CreatedAt.UTC()}
	if r.DESFireReaderID != nil {
		v.DESFireReaderID = strings.ToUpper(hex.EncodeToString(r.DESFireReaderID))
	}
	if !r.AgentSeenAt.IsZero() {
		t := r.AgentSeenAt.UTC()
		v.AgentSeenAt = &t
	}
	return v
}

type createReaderBody struct {
	ID              string `json:"id"`
	DESFireReaderID string `json:"desfire_reader_id"`
	Location        string `json:"location"`
}

// readerError answers the errors particular to readers, then the rest.
func (s *Server) readerError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ledger.ErrReaderExists):
		writeError(w, http.StatusConflict, codeReaderExists, "a reader with this id is already registered")
	case errors.Is(err, transaction.ErrReaderOffline):
		writeError(w, http.StatusConflict, codeReaderOffline, "the reader has no agent connected (start its agent, then try again)")
	case errors.Is(err, transaction.ErrNoReaders):
		writeError(w, http.StatusNotFound, codeNotFound, "this server's ledger has no registered readers")
	default:
		s.apiError(w, r, err)
	}
}

func (s *Server) createReader(w http.ResponseWriter, r *http.Request) {
	var body createReaderBody
	if err := decodeBody(w, r, &body); err != nil {
		s.apiError(w, r, err)
		return
	}
	n := transaction.NewReader{ID: body.ID, Location: body.Location}
	if body.DESFireReaderID != "" {
		b, err := hex.DecodeString(body.DESFireReaderID)
		if err != nil || len(b) != 16 {
			writeError(w, http.StatusBadRequest, codeInvalid, "desfire_reader_id must be 32 hex digits (16 bytes)")
			return
		}
		n.DESFireReaderID = b
	}
	rd, cred, err := s.o.Service.RegisterReader(r.Context(), who(r).Tenant, n)
	if err != nil {
		s.readerError(w, r, err)
		return
	}
	setObject(r, rd.ID)
	v := s.viewReader(rd)
	v.AgentCredential = cred
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listReaders(w http.ResponseWriter, r *http.Request) {
	rs, err := s.o.Service.Readers(r.Context(), who(r).Tenant)
	if err != nil {
		s.readerError(w, r, err)
		return
	}
	out := struct {
		Readers []readerView `json:"readers"`
	}{Readers: []readerView{}}
	for _, rd := range rs {
		out.Readers = append(out.Readers, s.viewReader(rd))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getReader(w http.ResponseWriter, r *http.Request) {
	rd, err := s.o.Service.Reader(r.Context(), who(r).Tenant, r.PathValue("id"))
	if err != nil {
		s.readerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.viewReader(rd))
}

func (s *Server) deleteReader(w http.ResponseWriter, r *http.Request) {
	if err := s.o.Service.DeleteReader(r.Context(), who(r).Tenant, r.PathValue("id")); err != nil {
		s.readerError(w, r, err)
		return
	}
	s.notifyReader(who(r).Tenant, r.PathValue("id")) // its agent here leaves at once
	w.WriteHeader(http.StatusNoContent)
}

// createReaderSession answers POST /v1/sessions with a reader_id: a
// balance session, or a "topup" session of topup_id (a credit or a
// reversal), addressed to the reader's agent; no bridge token exists.
func (s *Server) createReaderSession(w http.ResponseWriter, r *http.Request, body sessionBody) {
	if body.Template != "" || body.KeyVersion != nil || body.Lock || body.Profile != "" || body.Initial != nil || body.RandomID || body.UID != "" || body.Offsets != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, "the provisioning fields do not go with reader_id or topup_id")
		return
	}
	if body.ReaderID == nil {
		writeError(w, http.StatusBadRequest, codeInvalid, "topup_id goes with reader_id (a top-up's bridge token comes from POST /v1/topups/{id}/bridge-tokens)")
		return
	}
	p, reader := who(r), *body.ReaderID
	var (
		sess ledger.Session
		err  error
	)
	switch {
	case body.Kind == "balance" && body.TopUpID == nil:
		sess, err = s.o.Service.ReaderBalanceSession(r.Context(), p.Tenant, reader)
	case body.Kind == "topup" && body.TopUpID != nil:
		id, perr := uuid.Parse(*body.TopUpID)
		if perr != nil {
			writeError(w, http.StatusBadRequest, codeInvalid, "topup_id must be a UUID")
			return
		}
		sess, err = s.o.Service.ReaderTopUpSession(r.Context(), p.Tenant, reader, id)
	default:
		writeError(w, http.StatusBadRequest, codeInvalid, `with reader_id, kind is "balance" (no topup_id) or "topup" (with topup_id)`)
		return
	}
	if err != nil {
		s.readerError(w, r, err)
		return
	}
	s.notifyReader(p.Tenant, reader)
	setObject(r, sess.ID.String())
	out := struct {
		SessionID string `json:"session_id"`
		ReaderID  string `json:"reader_id"`
		TopUpID   string `json:"topup_id,omitempty"`
	}{SessionID: sess.ID.String(), ReaderID: reader}
	if body.TopUpID != nil {
		out.TopUpID = sess.TopUpID.String()
	}
	writeJSON(w, http.StatusCreated, out)
}

// createReaderTopUp answers POST /v1/topups with a reader_id: the top-up
// is created (or replayed) and its session addressed to the reader's
// agent; the answer carries session_id and session_reader_id, never a
// bridge token. An unknown or offline reader is refused before anything
// is created. A replay of a top-up that is no longer pending dispatches
// nothing (no session_id).
func (s *Server) createReaderTopUp(w http.ResponseWriter, r *http.Request, key string, req ledger.Request, reader string) {
	t, sess, created, err := s.o.Service.CreateReaderTopUp(r.Context(), key, req, reader)
	if err != nil {
		s.readerError(w, r, err)
		return
	}
	setObject(r, t.ID.String())
	v := viewTopUp(t)
	if sess.ID != uuid.Nil {
		s.notifyReader(t.Tenant, reader)
		v.SessionID, v.SessionReaderID = sess.ID.String(), reader
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, v)
}
