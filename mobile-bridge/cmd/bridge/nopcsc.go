//go:build !pcsc

package main

import (
	"context"
	"errors"
	"io"
	"time"
)

// errNoPCSC says how to get the PC/SC backend: it needs cgo and
// libpcsclite, so it is left out of the default build.
var errNoPCSC = errors.New("built without PC/SC support: build with -tags pcsc (needs libpcsclite-dev)")

func openPCSC(context.Context, string, time.Duration) (cardBackend, error) {
	return cardBackend{}, errNoPCSC
}

func listPCSCReaders(io.Writer) error { return errNoPCSC }
