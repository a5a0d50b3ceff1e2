package gitops

import (
	"fmt"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// markSwitched gives the objects Argo Rollouts writes to (switched; those
// without a namespace are in namespace) that the build objs holds Flux's
// ssa: IfNotPresent in their files: Argo Rollouts switches Services'
// selectors and sets an HTTPRoute's weights, which Flux would otherwise
// put back whenever it applies. It returns the objects it found and
// whether a file changed.
func markSwitched(root string, objs []built, namespace string, switched []ObjectID) ([]built, bool, error) {
	var found []built
	changed := false
	for _, want := range switched {
		want = want.in(namespace)
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

// checkSwitched fails when a marked object does not build with Flux's ssa:
// IfNotPresent (a patch or generator sets its annotations).
func checkSwitched(after []built, marked []built) error {
	for _, s := range marked {
		for _, o := range after {
			if o.id == s.id {
				obj, err := o.object()
				if err != nil {
					return err
				}
				if v := obj.GetAnnotations()[FluxSSAAnnotation]; v != FluxSSAIfAbsent && v != "Ignore" {
					return fmt.Errorf("%w: %s does not build with %s: %s; set it where its annotations come from",
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
