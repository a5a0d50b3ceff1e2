package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
)

// TemplateHashLength is how many hex digits of the digest a template hash
// keeps: enough to tell releases apart, short enough to read in a commit.
const TemplateHashLength = 10

// TemplateHash identifies a Deployment's pod template. It is a digest of the
// template's canonical JSON, so the same template has the same hash on every
// cluster and after every restart, which lets Git record promotions by hash.
func TemplateHash(template *corev1.PodTemplateSpec) string {
	// json.Marshal of an API struct is deterministic: fields in declaration
	// order and map keys sorted.
	data, err := json.Marshal(template)
	if err != nil {
		// A PodTemplateSpec always marshals; this would be a programming
		// error.
		panic(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:TemplateHashLength]
}
