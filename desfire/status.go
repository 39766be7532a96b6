package desfire

import (
	"errors"
	"fmt"
)

// Native DESFire status codes (the SW2 byte after SW1 = 0x91, or the first
// byte of a native response). Names follow the public DESFire Light and
// NTAG 424 DNA data sheets (MF2DLHX0 section 11, NT4H2421Gx section 10).
const (
	StatusOK                  byte = 0x00
	StatusNoChanges           byte = 0x0C
	StatusOutOfMemory         byte = 0x0E
	StatusIllegalCommand      byte = 0x1C
	StatusIntegrityError      byte = 0x1E
	StatusNoSuchKey           byte = 0x40
	StatusLengthError         byte = 0x7E
	StatusPermissionDenied    byte = 0x9D
	StatusParameterError      byte = 0x9E
	StatusApplicationNotFound byte = 0xA0
	StatusApplIntegrityError  byte = 0xA1
	StatusAuthenticationError byte = 0xAE
	StatusAdditionalFrame     byte = 0xAF
	StatusBoundaryError       byte = 0xBE
	StatusPICCIntegrityError  byte = 0xC1
	StatusCommandAborted      byte = 0xCA
	StatusPICCDisabled        byte = 0xCD
	StatusCountError          byte = 0xCE
	StatusDuplicateError      byte = 0xDE
	StatusMemoryError         byte = 0xEE
	StatusFileNotFound        byte = 0xF0
	StatusFileIntegrityError  byte = 0xF1
	StatusAuthenticationDelay byte = 0xAD
)

// Sentinels for card status codes. A *StatusError unwraps to one of them,
// so callers write errors.Is(err, desfire.ErrBoundary).
var (
	ErrNoChanges           = errors.New("desfire: no changes")
	ErrOutOfMemory         = errors.New("desfire: out of EEPROM")
	ErrIllegalCommand      = errors.New("desfire: illegal command code")
	ErrIntegrity           = errors.New("desfire: integrity error")
	ErrNoSuchKey           = errors.New("desfire: no such key")
	ErrLength              = errors.New("desfire: length error")
	ErrPermissionDenied    = errors.New("desfire: permission denied")
	ErrParameter           = errors.New("desfire: parameter error")
	ErrApplicationNotFound = errors.New("desfire: application not found")
	ErrApplIntegrity       = errors.New("desfire: application integrity error")
	ErrAuthentication      = errors.New("desfire: authentication error")
	ErrAuthenticationDelay = errors.New("desfire: authentication delay")
	ErrBoundary            = errors.New("desfire: boundary error")
	ErrPICCIntegrity       = errors.New("desfire: PICC integrity error")
	ErrCommandAborted      = errors.New("desfire: command aborted")
	ErrPICCDisabled        = errors.New("desfire: PICC disabled")
	ErrCount               = errors.New("desfire: count error")
	ErrDuplicate           = errors.New("desfire: duplicate error")
	ErrMemory              = errors.New("desfire: EEPROM error")
	ErrFileNotFound        = errors.New("desfire: file not found")
	ErrFileIntegrity       = errors.New("desfire: file integrity error")
	// ErrUnknownStatus is what a status word with no named meaning unwraps to.
	ErrUnknownStatus = errors.New("desfire: unknown status")
)

// Sentinels for faults found by this side, not reported by the card.
var (
	// ErrResponseMAC: a response MAC (EV1 CMAC or EV2 MACt) did not verify.
	ErrResponseMAC = errors.New("desfire: response MAC mismatch")
	// ErrResponseCRC: the CRC32 inside an EV1 enciphered response did not verify.
	ErrResponseCRC = errors.New("desfire: response CRC mismatch")
	// ErrRndA: the card's proof of RndA during authentication was wrong.
	ErrRndA = errors.New("desfire: card returned a wrong RndA'")
	// ErrShortResponse: the response is shorter than its layout requires.
	ErrShortResponse = errors.New("desfire: response too short")
	// ErrLongResponse: the response has more bytes than its layout allows.
	ErrLongResponse = errors.New("desfire: response too long")
	// ErrPadding: decrypted data does not carry valid padding.
	ErrPadding = errors.New("desfire: bad padding")
	// ErrTransactionMAC: the TMV returned by CommitTransaction did not verify.
	ErrTransactionMAC = errors.New("desfire: transaction MAC mismatch")
	// ErrChannelClosed: the secure channel failed earlier and needs a new
	// authentication before it can be used again.
	ErrChannelClosed = errors.New("desfire: secure channel closed; authenticate again")
	// ErrNotAuthenticated: a protected command was attempted without a channel.
	ErrNotAuthenticated = errors.New("desfire: not authenticated")
	// ErrNotPipelinable: the command needs a response that has not been
	// verified yet, so it cannot be prepared ahead.
	ErrNotPipelinable = errors.New("desfire: command depends on an unverified response")
	// ErrUnexpectedStatus: a status word that the exchange did not allow.
	ErrUnexpectedStatus = errors.New("desfire: unexpected status word")
	// ErrFrameTooLong: a command does not fit the transport's frame.
	ErrFrameTooLong = errors.New("desfire: command too long")
)

var statusSentinels = map[byte]error{
	StatusNoChanges:           ErrNoChanges,
	StatusOutOfMemory:         ErrOutOfMemory,
	StatusIllegalCommand:      ErrIllegalCommand,
	StatusIntegrityError:      ErrIntegrity,
	StatusNoSuchKey:           ErrNoSuchKey,
	StatusLengthError:         ErrLength,
	StatusPermissionDenied:    ErrPermissionDenied,
	StatusParameterError:      ErrParameter,
	StatusApplicationNotFound: ErrApplicationNotFound,
	StatusApplIntegrityError:  ErrApplIntegrity,
	StatusAuthenticationError: ErrAuthentication,
	StatusAuthenticationDelay: ErrAuthenticationDelay,
	StatusBoundaryError:       ErrBoundary,
	StatusPICCIntegrityError:  ErrPICCIntegrity,
	StatusCommandAborted:      ErrCommandAborted,
	StatusPICCDisabled:        ErrPICCDisabled,
	StatusCountError:          ErrCount,
	StatusDuplicateError:      ErrDuplicate,
	StatusMemoryError:         ErrMemory,
	StatusFileNotFound:        ErrFileNotFound,
	StatusFileIntegrityError:  ErrFileIntegrity,
}

// StatusError is a status word returned by the card that ends a command.
type StatusError struct {
	SW uint16 // full status word, e.g. 0x91BE
}

// Status returns the native DESFire status byte (SW2 when SW1 is 0x91).
func (e *StatusError) Status() byte { return byte(e.SW) }

func (e *StatusError) Error() string {
	return fmt.Sprintf("card status %04X: %v", e.SW, e.Unwrap())
}

// Unwrap returns the sentinel for the status, or ErrUnknownStatus.
func (e *StatusError) Unwrap() error {
	if e.SW>>8 == 0x91 {
		if s, ok := statusSentinels[byte(e.SW)]; ok {
			return s
		}
	}
	return ErrUnknownStatus
}

// NewStatusError returns the error for a native status byte.
func NewStatusError(status byte) *StatusError {
	return &StatusError{SW: 0x9100 | uint16(status)}
}
