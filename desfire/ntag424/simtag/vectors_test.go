package simtag

import (
	"os"
	"path/filepath"

	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

// readVector reads a published vector file from the repository's copy
// (testdata/vectors, or DESFIRE_VECTORS).
func readVector(name string) ([]byte, error) {
	dir, err := vectors.Dir()
	if err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(dir, name))
}
