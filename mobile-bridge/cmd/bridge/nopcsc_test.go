//go:build !pcsc

package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestNoPCSC(t *testing.T) {
	if _, err := openPCSC(context.Background(), "", 0); !errors.Is(err, errNoPCSC) || !strings.Contains(err.Error(), "-tags pcsc") {
		t.Fatalf("openPCSC: %v", err)
	}
	if err := listPCSCReaders(io.Discard); !errors.Is(err, errNoPCSC) {
		t.Fatalf("listPCSCReaders: %v", err)
	}
	cases := []struct {
		name string
		args []string
		want int
	}{
		{"list readers", []string{"-list-readers"}, 1},
		{"pcsc backend", []string{"-token", "t", "-pcsc", "-wait", "1s"}, 1},
		{"no backend", []string{"-token", "t"}, 2},
		{"both backends", []string{"-token", "t", "-sim", "-pcsc"}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := run(c.args); got != c.want {
				t.Fatalf("run(%q) = %d, want %d", c.args, got, c.want)
			}
		})
	}
}
