package controllers

import (
	corev1 "k8s.io/api/core/v1"
)

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
