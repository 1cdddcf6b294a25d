// SPDX-License-Identifier: Apache-2.0

//go:build tools

// Package tools pins kube-apiserver for vmwatch's test environment. k8s.io/kubernetes
// requires its staging modules at v0.0.0 through replace directives that only work inside
// its own repository, so go.mod here replaces each one with its published v0.34.2 module:
// `go build k8s.io/kubernetes/cmd/kube-apiserver` in this module builds the binary.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
