package sun

import "crypto/subtle"

// constantTimeEqual compares MACs without leaking where they differ.
func constantTimeEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
