package gitops

import (
	"fmt"
	"os"
)

// OptOut is the change that hands a Deployment back from sluice when its
// sluice.dev/strategy annotation was removed in Git.
type OptOut struct {
	// Kustomization that applies the Delivery and the Deployment.
	Kustomization Kustomization
	// Delivery and Deployment as the Kustomization builds them.
	Delivery, Deployment ObjectID
	// Replicas the Deployment serves with again: the Delivery's.
	Replicas int32
	// Switched are the objects Argo Rollouts wrote to (see Adoption):
	// their Flux ssa: IfNotPresent goes, so that Flux applies them from
	// Git again.
	Switched []ObjectID
}

// RemoveDelivery edits the repository at root for an opt-out: it deletes
// the Delivery's document (its file, and the file's entry in the folder's
// kustomization.yaml, when nothing else is in it) and writes the Delivery's
// replicas back on the Deployment. It reports false when Git already says
// all of it.
func RemoveDelivery(root string, o OptOut) (bool, error) {
	k := o.Kustomization
	objs, err := build(root, k)
	if err != nil {
		return false, err
	}
	deliveryFile, deploymentFile := fileOf(objs, o.Delivery), fileOf(objs, o.Deployment)
	if deploymentFile == "" {
		return false, fmt.Errorf("%w: no file of %s defines %s", ErrCannotEdit, k.Path, o.Deployment)
	}

	changed := false
	if deliveryFile != "" {
		if err := removeDocument(root, k.Path, deliveryFile, o.Delivery); err != nil {
			return false, err
		}
		changed = true
	}
	if _, err := literalField(root, k, deploymentFile, o.Deployment, "spec", "replicas"); err != nil {
		return false, err
	}
	set, err := setDeploymentReplicas(root, deploymentFile, o.Deployment, o.Replicas, "")
	if err != nil {
		return false, err
	}
	changed = changed || set
	for _, obj := range o.Switched {
		obj = obj.in(o.Deployment.Namespace)
		if file := fileOf(objs, obj); file != "" {
			removed, err := removeAnnotation(root, file, obj, FluxSSAAnnotation, FluxSSAIfAbsent)
			if err != nil {
				return false, err
			}
			changed = changed || removed
		}
	}

	// Check the result as Flux will build it.
	after, err := build(root, k)
	if err != nil {
		return false, fmt.Errorf("%w: removing the Delivery breaks the build of %s: %v", ErrCannotEdit, k.Path, err)
	}
	for _, b := range after {
		if b.id.matches(o.Delivery) {
			if deliveryFile == "" {
				return false, fmt.Errorf("%w: kustomize cannot tell which file defines %s (a generator or a remote base?); remove it there",
					ErrCannotEdit, o.Delivery)
			}
			return false, fmt.Errorf("%w: %s is still in the build of %s once removed from %s; remove it where it is included",
				ErrCannotEdit, o.Delivery, k.Path, deliveryFile)
		}
	}
	if r, ok, err := replicasIn(after, k.Path, o.Deployment); err != nil {
		return false, err
	} else if !ok || r != o.Replicas {
		return false, fmt.Errorf("%w: %s builds with replicas %d after setting %d in %s; %s sets it: set it to %d there",
			ErrCannotEdit, o.Deployment, r, o.Replicas, deploymentFile,
			whatSets(root, k, o.Deployment, deploymentFile, hasReplicas(o.Replicas)), o.Replicas)
	}
	return changed, nil
}

// removeDocument deletes the object's document from the file rel; a file
// left empty is deleted and unlisted from its folder's kustomization.yaml.
func removeDocument(root, kpath, rel string, id ObjectID) error {
	file, err := securePath(root, rel)
	if err != nil {
		return err
	}
	docs, err := readDocuments(file)
	if err != nil {
		return err
	}
	remove := documentOf(docs, id)
	kept := docs[:0]
	for _, doc := range docs {
		if doc != remove {
			kept = append(kept, doc)
		}
	}
	if len(kept) == len(docs) {
		return fmt.Errorf("%w: %s does not define %s itself (a patch or generator does); remove it there", ErrCannotEdit, rel, id)
	}
	if len(kept) > 0 {
		return writeDocuments(file, kept)
	}
	touched(file)
	if err := os.Remove(file); err != nil {
		return err
	}
	_, err = unregisterResource(root, listingKustomization(root, kpath, rel), rel)
	return err
}
