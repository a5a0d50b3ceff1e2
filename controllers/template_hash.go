package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
)

// templateHashLength is how many hex digits of the digest a template hash
// keeps: enough to tell releases apart, short enough to read in a commit.
const templateHashLength = 10

// templateHash identifies a Deployment's pod template. It is a digest of the
// template's canonical JSON, so the same template has the same hash on every
// cluster and after every restart, which lets Git record promotions by hash.
func templateHash(template *corev1.PodTemplateSpec) string {
	// json.Marshal of an API struct is deterministic: fields in declaration
	// order and map keys sorted.
	data, err := json.Marshal(template)
	if err != nil {
		// A PodTemplateSpec always marshals; this would be a programming
		// error.
		panic(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:templateHashLength]
}

// withImages returns a copy of template whose containers (and init
// containers) run the given images, by container name.
func withImages(template *corev1.PodTemplateSpec, images map[string]string) *corev1.PodTemplateSpec {
	out := template.DeepCopy()
	for i := range out.Spec.InitContainers {
		if image, ok := images[out.Spec.InitContainers[i].Name]; ok {
			out.Spec.InitContainers[i].Image = image
		}
	}
	for i := range out.Spec.Containers {
		if image, ok := images[out.Spec.Containers[i].Name]; ok {
			out.Spec.Containers[i].Image = image
		}
	}
	return out
}
