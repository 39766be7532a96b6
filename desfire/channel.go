package desfire

// CommMode is how a command or response payload is protected on the wire.
// The values are those of the file settings' communication mode bits.
type CommMode uint8

// Communication modes (DESFire Light data sheet, "Communication modes").
const (
	CommPlain CommMode = 0x00
	CommMAC   CommMode = 0x01
	CommFull  CommMode = 0x03
)

func (m CommMode) String() string {
	switch m {
	case CommPlain:
		return "plain"
	case CommMAC:
		return "mac"
	case CommFull:
		return "full"
	}
	return "invalid"
}

// Command is one logical native DESFire command, before secure messaging
// and before it is split into frames.
type Command struct {
	// Code is the native command code (INS of the wrapped APDU).
	Code byte
	// Header is the part of the command sent in plain even in Full mode
	// (file number, offset, length …); it is covered by the MAC.
	Header []byte
	// Data is the part protected according to Mode.
	Data []byte
	// Mode protects Data (and MACs Header) when a channel is active.
	Mode CommMode
	// RespMode is the protection of the response data.
	RespMode CommMode
	// RespLen is the expected plaintext response length. A negative value
	// -u means the length varies but is a multiple of u (-1: any length;
	// record reads use -RecordSize). EV1 Full mode uses it to strip CRC and
	// padding — without it, an answer whose first CRC byte is 00 would also
	// verify one byte longer — and every command uses it to reject short
	// and overlong responses.
	RespLen int
	// Predictable says the plaintext response is exactly Predicted (often
	// empty). On EV1 a channel can then compute the response MAC, and the
	// IV after it, before the card answers, which is what lets further
	// commands be pipelined behind this one.
	Predictable bool
	Predicted   []byte
	// Name is used in error messages ("credit file 3").
	Name string

	// ev1Trailer follows the CRC inside an EV1 Full-mode cryptogram
	// (ChangeKey of another key: CRC32 of the new key).
	ev1Trailer []byte
	// endsSession: the card ends the session after this command (changing
	// the authenticated key); its answer carries no MAC.
	endsSession bool
}

// Reply verifies the card's answer to one sealed command.
type Reply interface {
	// Open checks the final native status and the response data (all
	// frames concatenated, status excluded) and returns the plaintext
	// data. Any failure closes the channel.
	Open(status byte, data []byte) ([]byte, error)
}

// Channel is the secure messaging state created by an authentication
// (EV1 AuthenticateAES or EV2 AuthenticateEV2First/NonFirst). Only
// authentication creates one; every command is written once against this
// interface and runs over either generation.
type Channel interface {
	// Seal prepares cmd: it returns the native payload to send after the
	// command code (header ‖ protected data ‖ MAC, per cmd.Mode) and the
	// Reply that verifies the card's answer. Replies must be opened in the
	// order their commands were sealed. Seal returns ErrNotPipelinable when
	// the payload would depend on a reply not yet opened (EV1 after a
	// command whose response is not Predictable), and ErrChannelClosed
	// after any failure.
	Seal(cmd *Command) (payload []byte, r Reply, err error)
	// Close makes the channel unusable; later Seal and Open calls fail
	// with ErrChannelClosed. Called on any error the channel did not see.
	Close()
	// Err is nil while the channel is usable.
	Err() error
	// Generation is "ev1" or "ev2".
	Generation() string
}

// Authenticator runs one authentication protocol as two exchanges:
// Start's frame (answered with 91AF and the card's challenge), Respond's
// frame (answered with 9100 and the card's proof), then Finish.
type Authenticator interface {
	// Start returns the command code and payload of the first frame.
	Start() (code byte, payload []byte)
	// Respond takes the card's answer to the first frame and returns the
	// payload of the second frame (sent with code 0xAF).
	Respond(status byte, data []byte) (payload []byte, err error)
	// Finish verifies the card's answer to the second frame and returns
	// the channel.
	Finish(status byte, data []byte) (Channel, error)
}

// EarlyChanneler is implemented by an Authenticator whose card proof is
// fully predictable (EV1 AuthenticateAES: E(K, RndA') under a known IV), so
// the channel exists right after Respond and commands can be sealed to ride
// in the same batch as the second authentication frame. Replies of that
// channel refuse to open until Finish has verified the card's proof.
type EarlyChanneler interface {
	EarlyChannel() (Channel, error)
}
