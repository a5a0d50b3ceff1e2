package gitops

import (
	"fmt"
	"path"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// fieldLine returns the line of the field at fields in the object's
// document of the repository file rel, 0 when the document does not set it,
// and the field's text.
func fieldLine(root, rel string, id ObjectID, fields ...string) (line int, value string, err error) {
	file, err := securePath(root, rel)
	if err != nil {
		return 0, "", err
	}
	docs, err := readDocuments(file)
	if err != nil {
		return 0, "", err
	}
	doc := documentOf(docs, id)
	if doc == nil {
		return 0, "", nil
	}
	n, err := doc.Pipe(yaml.Lookup(fields...))
	if err != nil || n == nil {
		return 0, "", err
	}
	return n.YNode().Line, n.YNode().Value, nil
}

// literalField returns the line of the field at fields of the object's
// document in rel (0 when the document does not set it), and fails with
// ErrCannotEdit when the field holds a variable Flux's postBuild
// substitutes: sluice does not write a literal over it.
func literalField(root string, k Kustomization, rel string, id ObjectID, fields ...string) (int, error) {
	line, value, err := fieldLine(root, rel, id, fields...)
	if err != nil || !k.substitutes() || !substituted(value) {
		return line, err
	}
	return line, fmt.Errorf("%w: %s:%d: %s of %s is %q, which the postBuild of %s substitutes; sluice writes no literal over a variable: set it literally there, or take it out of the variable",
		ErrCannotEdit, rel, line, strings.Join(fields, "."), id, value, k.name())
}

// whatSets names what sets a field of the object id in the build of k
// other than the text of its file: the Kustomization's own patches,
// images or components, or the patches, replicas, images and components
// fields of the kustomizations that include the file. holds tells
// whether a built object has the field as its file says.
func whatSets(root string, k Kustomization, id ObjectID, file string, holds func(obj *yaml.RNode) bool) string {
	if k.Flux != nil {
		spec := k.Flux.Spec
		for _, part := range []struct {
			name  string
			set   bool
			clear func(k Kustomization)
		}{
			{"spec.patches", len(spec.Patches) > 0, func(k Kustomization) { k.Flux.Spec.Patches = nil }},
			{"spec.images", len(spec.Images) > 0, func(k Kustomization) { k.Flux.Spec.Images = nil }},
			{"spec.components", len(spec.Components) > 0, func(k Kustomization) { k.Flux.Spec.Components = nil }},
		} {
			if !part.set {
				continue
			}
			without := k
			without.Flux = k.Flux.DeepCopy()
			part.clear(without)
			objs, err := build(root, without)
			if err != nil {
				continue
			}
			if o := find(objs, id); o != nil {
				// What cannot be read is passed over, as a build that fails.
				if ok, err := o.satisfies(holds); err == nil && ok {
					return fmt.Sprintf("%s of %s", part.name, k.name())
				}
			}
		}
	}
	var found []string
	for _, kf := range includingKustomizations(root, k.Path, file) {
		kfile, doc, err := readKustomization(root, kf)
		if err != nil || doc == nil {
			continue
		}
		for _, field := range []string{"patches", "patchesStrategicMerge", "patchesJson6902", "replicas", "images", "components"} {
			if f := doc.Field(field); f != nil {
				found = append(found, fmt.Sprintf("the %s field of %s (line %d)", field, relTo(root, kfile), f.Key.YNode().Line))
			}
		}
	}
	if len(found) == 0 {
		return "a transformer of the build"
	}
	return strings.Join(found, ", ")
}

// includingKustomizations returns the repository folders, from the
// Kustomization's path down, whose kustomization includes the repository
// file rel through its resources or components.
func includingKustomizations(root, kpath, rel string) []string {
	target := path.Dir(rel)
	return kustomizationChain(root, kpath, func(dir, _, entry string) bool {
		return entry == rel || dir == target
	})
}
