//go:build tools

// Package crds keeps the Gateway API module required: its CRDs, not its
// code, are what the test control plane uses.
package crds

import _ "sigs.k8s.io/gateway-api/apis/v1"
