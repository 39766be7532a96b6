package server

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckDuplicateKeys(t *testing.T) {
	cases := []struct {
		name, body string
		dup        bool
	}{
		{"flat", `{"a":1,"b":2}`, false},
		{"flat duplicate", `{"a":1,"a":2}`, true},
		{"same key in sibling objects", `{"x":{"a":1},"y":{"a":2}}`, false},
		{"nested duplicate", `{"x":{"a":1,"a":2}}`, true},
		{"array of objects", `[{"a":1},{"a":1}]`, false},
		{"duplicate after nested value", `{"a":{"b":[1,{"c":2}]},"a":3}`, true},
		{"key equal to a value", `{"a":"b","b":"a"}`, false},
		{"escaped spelling", `{"a":1,"\u0061":2}`, true},
		{"malformed left to the decoder", `{"a":`, false},
		{"too deep", strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := checkDuplicateKeys([]byte(c.body))
			var be *errBody
			if got := err != nil && errors.As(err, &be); got != c.dup {
				t.Fatalf("err = %v, want refused=%v", err, c.dup)
			}
		})
	}
}

// FuzzCheckDuplicateKeys: any bytes, never a panic.
func FuzzCheckDuplicateKeys(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `[{"a":[{"b":1}]}]`, `{"a":`, `"x"`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = checkDuplicateKeys(b)
	})
}
