package gitops

import (
	"fmt"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// markSwitchedServices gives the Services named in names, in namespace,
// that the build objs holds Flux's ssa: IfNotPresent in their files: Argo
// Rollouts switches their selectors, which Flux would otherwise put back.
// It returns the Services it found and whether a file changed.
func markSwitchedServices(root string, objs []built, namespace string, names []string) ([]built, bool, error) {
	var found []built
	changed := false
	for _, name := range names {
		want := ObjectID{Kind: "Service", Namespace: namespace, Name: name}
		for _, o := range objs {
			if !o.id.matches(want) || o.file == "" {
				continue
			}
			annotated, err := annotate(root, o.file, o.id, FluxSSAAnnotation, FluxSSAIfAbsent)
			if err != nil {
				return nil, false, err
			}
			changed = changed || annotated
			found = append(found, o)
		}
	}
	return found, changed, nil
}

// checkSwitchedServices fails when a marked Service does not build with
// Flux's ssa: IfNotPresent (a patch or generator sets its annotations).
func checkSwitchedServices(after []built, services []built) error {
	for _, s := range services {
		for _, o := range after {
			if o.id == s.id {
				if v := o.obj.GetAnnotations()[FluxSSAAnnotation]; v != FluxSSAIfAbsent && v != "Ignore" {
					return fmt.Errorf("%w: %s does not build with %s: %s; set it where the Service's annotations come from",
						ErrCannotEdit, o.id, FluxSSAAnnotation, FluxSSAIfAbsent)
				}
			}
		}
	}
	return nil
}

// annotate sets an annotation on the object's document in the file rel,
// unless the document says IfNotPresent or Ignore already for Flux's.
func annotate(root, rel string, id ObjectID, key, value string) (bool, error) {
	changed, found, err := editDocument(root, rel, id, func(doc *yaml.RNode) (bool, error) {
		switch doc.GetAnnotations()[key] {
		case value, "Ignore":
			return false, nil
		}
		annotations, err := doc.Pipe(yaml.LookupCreate(yaml.MappingNode, "metadata", "annotations"))
		if err != nil {
			return false, err
		}
		return true, annotations.PipeE(yaml.SetField(key, yaml.NewStringRNode(value)))
	})
	if err == nil && !found {
		err = fmt.Errorf("%w: %s does not define %s itself; annotate it %s: %s where it is defined", ErrCannotEdit, rel, id, key, value)
	}
	return changed, err
}

// removeAnnotation removes an annotation with the given value from the
// object's document in the file rel.
func removeAnnotation(root, rel string, id ObjectID, key, value string) (bool, error) {
	changed, _, err := editDocument(root, rel, id, func(doc *yaml.RNode) (bool, error) {
		if doc.GetAnnotations()[key] != value {
			return false, nil
		}
		annotations, err := doc.Pipe(yaml.Lookup("metadata", "annotations"))
		if err != nil {
			return false, err
		}
		if err := annotations.PipeE(yaml.Clear(key)); err != nil {
			return false, err
		}
		if len(annotations.Content()) == 0 {
			return true, doc.PipeE(yaml.Lookup("metadata"), yaml.Clear("annotations"))
		}
		return true, nil
	})
	return changed, err
}
