package gitops

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// parkedComment explains, on the Deployment's replicas line, why it is zero.
const parkedComment = "sluice: the Rollout serves this app; its replicas are in the Delivery"

// setDeploymentReplicas sets spec.replicas of the Deployment's document in
// the repository file rel (a new line goes first among the spec's fields),
// with comment as its line comment, or with no comment of sluice's when
// comment is empty. It reports whether the file changed.
func setDeploymentReplicas(root, rel string, id ObjectID, replicas int32, comment string) (bool, error) {
	value := strconv.Itoa(int(replicas))
	changed, found, err := editDocument(root, rel, id, func(doc *yaml.RNode) (bool, error) {
		spec, err := doc.Pipe(yaml.LookupCreate(yaml.MappingNode, "spec"))
		if err != nil {
			return false, err
		}
		if f := spec.Field("replicas"); f != nil {
			n := f.Value.YNode()
			line := lineComment(comment, n.LineComment)
			if n.Value == value && n.LineComment == line {
				return false, nil
			}
			n.Value, n.Tag, n.LineComment = value, yaml.NodeTagInt, line
			return true, nil
		}
		key := yaml.NewScalarRNode("replicas").YNode()
		val := yaml.NewScalarRNode(value).YNode()
		val.Tag, val.LineComment = yaml.NodeTagInt, lineComment(comment, "")
		spec.YNode().Content = append([]*yaml.Node{key, val}, spec.YNode().Content...)
		return true, nil
	})
	if err == nil && !found {
		err = fmt.Errorf("%w: %s does not define %s itself; set its replicas to %d there", ErrCannotEdit, rel, id, replicas)
	}
	return changed, err
}

// lineComment is the comment for a replicas line: comment when set, else
// the user's existing comment (sluice's own parked comment goes).
func lineComment(comment, existing string) string {
	switch {
	case comment != "":
		return "# " + comment
	case strings.Contains(existing, parkedComment):
		return ""
	default:
		return existing
	}
}

// builtReplicas returns the Deployment's spec.replicas as the Kustomization
// path builds it; ok is false when the build sets none.
func builtReplicas(root, kpath string, id ObjectID) (replicas int32, ok bool, err error) {
	objs, err := build(root, kpath)
	if err != nil {
		return 0, false, err
	}
	return replicasIn(objs, kpath, id)
}

// replicasIn returns the Deployment's spec.replicas in the build objs of
// the Kustomization path kpath; ok is false when the build sets none.
func replicasIn(objs []built, kpath string, id ObjectID) (replicas int32, ok bool, err error) {
	for _, o := range objs {
		if !o.id.matches(id) {
			continue
		}
		n, err := o.obj.Pipe(yaml.Lookup("spec", "replicas"))
		if err != nil || n == nil {
			return 0, false, err
		}
		v, err := strconv.ParseInt(strings.TrimSpace(n.YNode().Value), 10, 32)
		return int32(v), err == nil, err
	}
	return 0, false, fmt.Errorf("%s is not in the build of %s", id, kpath)
}

// keepParked makes Git say what sluice needs while the Rollout serves: the
// Deployment at replicas: 0, so that Flux creates it at zero on a rebuilt
// cluster rather than at the API default of one, and the Services Argo
// Rollouts switches marked for Flux, so that Flux does not put their
// selectors back. objs is the build of kpath before the edit; a Deployment
// that another Kustomization applies (deploymentFile empty) is left alone.
func keepParked(root, kpath string, objs []built, deploymentFile string, id ObjectID, services []string) (_ bool, retErr error) {
	// What cannot be parked is not half-written: the files go back as they
	// were.
	var touched []string
	if deploymentFile != "" {
		touched = append(touched, deploymentFile)
	}
	for _, o := range objs {
		if o.id.Kind == "Service" && o.file != "" {
			touched = append(touched, o.file)
		}
	}
	restore, err := snapshot(root, touched)
	if err != nil {
		return false, err
	}
	defer func() {
		if retErr != nil {
			restore()
		}
	}()

	changed := false
	if deploymentFile != "" {
		set, err := setDeploymentReplicas(root, deploymentFile, id, 0, parkedComment)
		if err != nil {
			return false, err
		}
		changed = set
	}
	marked, annotated, err := markSwitchedServices(root, objs, id.Namespace, services)
	if err != nil {
		return false, err
	}
	changed = changed || annotated
	if deploymentFile == "" && len(marked) == 0 {
		return false, nil
	}

	// Check what Flux will build; when nothing changed, that is objs.
	after := objs
	if changed {
		var err error
		if after, err = build(root, kpath); err != nil {
			return false, fmt.Errorf("%w: parking breaks the build of %s: %v", ErrCannotEdit, kpath, err)
		}
	}
	if deploymentFile != "" {
		if r, ok, err := replicasIn(after, kpath, id); err != nil {
			return false, err
		} else if !ok || r != 0 {
			return false, fmt.Errorf("%w: %s still builds with replicas %d after setting 0 in %s; a patch or a kustomization replicas field sets it: make it 0 there",
				ErrCannotEdit, id, r, deploymentFile)
		}
	}
	return changed, checkSwitchedServices(after, marked)
}

// OptOut is the change that hands a Deployment back from sluice when its
// sluice.dev/strategy annotation was removed in Git.
type OptOut struct {
	// Path of the Kustomization in the repository, as in its spec.path.
	Path string
	// Delivery and Deployment as the Kustomization builds them.
	Delivery, Deployment ObjectID
	// Replicas the Deployment serves with again: the Delivery's.
	Replicas int32
	// Services Argo Rollouts switched: their Flux ssa: IfNotPresent goes,
	// so that Flux applies them from Git again.
	Services []string
}

// RemoveDelivery edits the repository at root for an opt-out: it deletes
// the Delivery's document (its file, and the file's entry in the folder's
// kustomization.yaml, when nothing else is in it) and writes the Delivery's
// replicas back on the Deployment. It reports false when Git already says
// all of it.
func RemoveDelivery(root string, o OptOut) (bool, error) {
	objs, err := build(root, o.Path)
	if err != nil {
		return false, err
	}
	deliveryFile, deploymentFile := fileOf(objs, o.Delivery), fileOf(objs, o.Deployment)
	if deploymentFile == "" {
		return false, fmt.Errorf("%w: no file of %s defines %s", ErrCannotEdit, o.Path, o.Deployment)
	}

	changed := false
	if deliveryFile != "" {
		if err := removeDocument(root, deliveryFile, o.Delivery); err != nil {
			return false, err
		}
		changed = true
	}
	set, err := setDeploymentReplicas(root, deploymentFile, o.Deployment, o.Replicas, "")
	if err != nil {
		return false, err
	}
	changed = changed || set
	for _, name := range o.Services {
		svc := ObjectID{Kind: "Service", Namespace: o.Deployment.Namespace, Name: name}
		if file := fileOf(objs, svc); file != "" {
			removed, err := removeAnnotation(root, file, svc, FluxSSAAnnotation, FluxSSAIfAbsent)
			if err != nil {
				return false, err
			}
			changed = changed || removed
		}
	}

	// Check the result as Flux will build it.
	after, err := build(root, o.Path)
	if err != nil {
		return false, fmt.Errorf("%w: removing the Delivery breaks the build of %s: %v", ErrCannotEdit, o.Path, err)
	}
	for _, b := range after {
		if b.id.matches(o.Delivery) {
			if deliveryFile == "" {
				return false, fmt.Errorf("%w: kustomize cannot tell which file defines %s (a generator or a remote base?); remove it there",
					ErrCannotEdit, o.Delivery)
			}
			return false, fmt.Errorf("%w: %s is still in the build of %s once removed from %s; remove it where it is included",
				ErrCannotEdit, o.Delivery, o.Path, deliveryFile)
		}
	}
	if r, ok, err := replicasIn(after, o.Path, o.Deployment); err != nil {
		return false, err
	} else if !ok || r != o.Replicas {
		return false, fmt.Errorf("%w: %s builds with replicas %d after setting %d in %s; a patch or a kustomization replicas field sets it: set it to %d there",
			ErrCannotEdit, o.Deployment, r, o.Replicas, deploymentFile, o.Replicas)
	}
	return changed, nil
}

// removeDocument deletes the object's document from the file rel; a file
// left empty is deleted and unlisted from its folder's kustomization.yaml.
func removeDocument(root, rel string, id ObjectID) error {
	file, err := securePath(root, rel)
	if err != nil {
		return err
	}
	docs, err := readDocuments(file)
	if err != nil {
		return err
	}
	kept := docs[:0]
	for _, doc := range docs {
		if !matches(doc, id) {
			kept = append(kept, doc)
		}
	}
	if len(kept) == len(docs) {
		return fmt.Errorf("%w: %s does not define %s itself (a patch or generator does); remove it there", ErrCannotEdit, rel, id)
	}
	if len(kept) > 0 {
		return writeDocuments(file, kept)
	}
	if err := os.Remove(file); err != nil {
		return err
	}
	_, err = unregisterResource(root, path.Dir(rel), path.Base(rel))
	return err
}

// unregisterResource removes name from the resources of dir's
// kustomization, when dir has one that lists it.
func unregisterResource(root, dir, name string) (bool, error) {
	kfile, k, err := readKustomization(root, dir)
	if err != nil || k == nil {
		return false, err
	}
	resources := k.Field("resources")
	if resources == nil {
		return false, nil
	}
	content := resources.Value.YNode().Content
	kept := content[:0]
	for _, e := range content {
		if strings.TrimPrefix(e.Value, "./") != name {
			kept = append(kept, e)
		}
	}
	if len(kept) == len(content) {
		return false, nil
	}
	resources.Value.YNode().Content = kept
	return true, writeDocuments(kfile, []*yaml.RNode{k})
}

// snapshot keeps the contents of the repository files rel and returns a
// function that writes them back.
func snapshot(root string, rel []string) (func(), error) {
	saved := map[string][]byte{}
	for _, r := range rel {
		file, err := securePath(root, r)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		saved[file] = data
	}
	return func() {
		for file, data := range saved {
			_ = os.WriteFile(file, data, 0o644)
		}
	}, nil
}
