// Package tests holds repository-level suites: the OpenAPI document
// against the real routes, the direction of imports between the layers,
// the compose file, and (in subpackages) load and fault tools.
package tests
