package server

import "crypto/tls"

// TLSConfig is the server side of TLS: version 1.2 with ECDHE and AEAD
// suites only (AES-GCM, ChaCha20-Poly1305: no CBC, no SHA-1 MACs, no RSA
// key exchange), or TLS 1.3 only. TLS 1.3 suites are all AEAD and not
// configurable in Go.
func TLSConfig(tls13Only bool) *tls.Config {
	if tls13Only {
		return &tls.Config{MinVersion: tls.VersionTLS13}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}
