package simcard

import "fmt"

// Inspection API for tests: it reads the committed (durable) state
// directly, never through APDUs, so a test can check what a card script
// really left on the card. AIDs are given as on the wire (3 bytes, LSB
// first).

func (c *Card) fileLocked(aid []byte, no byte, typ ...byte) (*file, error) {
	if len(aid) != 3 {
		return nil, fmt.Errorf("simcard: AID of %d bytes: %w", len(aid), ErrNoSuchObject)
	}
	a := c.apps[[3]byte{aid[0], aid[1], aid[2]}]
	if a == nil {
		return nil, fmt.Errorf("simcard: application %X: %w", aid, ErrNoSuchObject)
	}
	f := a.files[no]
	if f == nil {
		return nil, fmt.Errorf("simcard: application %X file %d: %w", aid, no, ErrNoSuchObject)
	}
	for _, t := range typ {
		if f.typ == t {
			return f, nil
		}
	}
	return nil, fmt.Errorf("simcard: application %X file %d has type %d: %w", aid, no, f.typ, ErrNoSuchObject)
}

// Value returns the committed value of a value file.
func (c *Card) Value(aid []byte, fileNo byte) (int32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := c.fileLocked(aid, fileNo, FileValue)
	if err != nil {
		return 0, err
	}
	return f.value, nil
}

// Data returns a copy of the committed content of a data file.
func (c *Card) Data(aid []byte, fileNo byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := c.fileLocked(aid, fileNo, FileStandard, FileBackup)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), f.data...), nil
}

// Records returns copies of the committed records of a record file,
// oldest first.
func (c *Card) Records(aid []byte, fileNo byte) ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := c.fileLocked(aid, fileNo, FileLinear, FileCyclic)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(f.records))
	for i, r := range f.records {
		out[i] = append([]byte(nil), r...)
	}
	return out, nil
}

// TransactionMAC returns the Transaction MAC counter and the last TMV of
// an application's Transaction MAC file.
func (c *Card) TransactionMAC(aid []byte) (tmc uint32, tmv []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(aid) != 3 {
		return 0, nil, fmt.Errorf("simcard: AID of %d bytes: %w", len(aid), ErrNoSuchObject)
	}
	a := c.apps[[3]byte{aid[0], aid[1], aid[2]}]
	if a == nil || a.tmacFile() == nil {
		return 0, nil, fmt.Errorf("simcard: application %X has no transaction MAC file: %w", aid, ErrNoSuchObject)
	}
	f := a.tmacFile()
	return f.tmc, append([]byte(nil), f.tmv...), nil
}

// Key returns a copy of an application key and its version (AID 000000 for
// the PICC master key).
func (c *Card) Key(aid []byte, keyNo int) (key []byte, version byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.picc
	if len(aid) != 3 {
		return nil, 0, fmt.Errorf("simcard: AID of %d bytes: %w", len(aid), ErrNoSuchObject)
	}
	if id := [3]byte{aid[0], aid[1], aid[2]}; id != ([3]byte{}) {
		a = c.apps[id]
	}
	if a == nil || keyNo < 0 || keyNo >= len(a.keys) {
		return nil, 0, fmt.Errorf("simcard: application %X key %d: %w", aid, keyNo, ErrNoSuchObject)
	}
	return append([]byte(nil), a.keys[keyNo].value[:]...), a.keys[keyNo].version, nil
}

// Applications returns the AIDs on the card in creation order.
func (c *Card) Applications() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][]byte, 0, len(c.appOrder))
	for _, a := range c.appOrder {
		out = append(out, append([]byte(nil), a[:]...))
	}
	return out
}

// UID returns the real 7-byte UID.
func (c *Card) UID() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.uid...)
}

// Authenticated reports the session kind ("", "ev1", "ev2") and key
// number, so tests can check that errors end the authentication.
func (c *Card) Authenticated() (kind string, keyNo byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.sess == nil:
		return "", 0
	case c.sess.kind == kindEV1:
		return "ev1", c.sess.keyNo
	}
	return "ev2", c.sess.keyNo
}

// Pending reports whether the selected application has uncommitted
// changes or Transaction MAC input.
func (c *Card) Pending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.txn != nil
}
