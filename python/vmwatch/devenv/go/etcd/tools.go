// SPDX-License-Identifier: Apache-2.0

//go:build tools

// Package tools pins etcd's server command for vmwatch's test environment:
// `go build go.etcd.io/etcd/server/v3` in this module builds the etcd binary.
package tools

import _ "go.etcd.io/etcd/server/v3"
