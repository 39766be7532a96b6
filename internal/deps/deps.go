// Package deps pins the project's chosen third-party modules while the
// packages that use them are being written. It is removed once every
// dependency has a real importer.
package deps

import (
	_ "github.com/aead/cmac"
	_ "github.com/coder/websocket"
	_ "github.com/google/uuid"
	_ "github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/redis/go-redis/v9"
	_ "go.uber.org/zap"
	_ "modernc.org/sqlite"
)
