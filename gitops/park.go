package gitops

import (
	"fmt"
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
func builtReplicas(root string, k Kustomization, id ObjectID) (replicas int32, ok bool, err error) {
	objs, err := build(root, k)
	if err != nil {
		return 0, false, err
	}
	return replicasIn(objs, k.Path, id)
}

// hasReplicas holds for a built object whose spec.replicas is replicas.
func hasReplicas(replicas int32) func(*yaml.RNode) bool {
	return func(obj *yaml.RNode) bool {
		n, _ := obj.Pipe(yaml.Lookup("spec", "replicas"))
		return n != nil && strings.TrimSpace(n.YNode().Value) == strconv.Itoa(int(replicas))
	}
}

// replicasIn returns the Deployment's spec.replicas in the build objs of
// the Kustomization path kpath; ok is false when the build sets none.
func replicasIn(objs []built, kpath string, id ObjectID) (replicas int32, ok bool, err error) {
	if o := find(objs, id); o != nil {
		n, err := o.lookup("spec", "replicas")
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
func keepParked(root string, k Kustomization, objs []built, deploymentFile string, id ObjectID, switched []ObjectID) (_ bool, retErr error) {
	// What cannot be parked is not half-written: the files go back as they
	// were.
	var touched []string
	if deploymentFile != "" {
		touched = append(touched, deploymentFile)
	}
	for _, want := range switched {
		if o := find(objs, want.in(id.Namespace)); o != nil && o.file != "" {
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
		if _, err := literalField(root, k, deploymentFile, id, "spec", "replicas"); err != nil {
			return false, err
		}
		set, err := setDeploymentReplicas(root, deploymentFile, id, 0, parkedComment)
		if err != nil {
			return false, err
		}
		changed = set
	}
	marked, annotated, err := markSwitched(root, objs, id.Namespace, switched)
	if err != nil {
		return false, err
	}
	changed = changed || annotated
	if deploymentFile == "" && len(marked) == 0 {
		return false, nil
	}

	// Check what Flux will build; when nothing changed, that is objs.
	err = checkBuild(root, k, objs, changed, func(err error) error {
		return fmt.Errorf("%w: parking breaks the build of %s: %v", ErrCannotEdit, k.Path, err)
	}, func(after []built) error {
		if deploymentFile != "" {
			if r, ok, err := replicasIn(after, k.Path, id); err != nil {
				return err
			} else if !ok || r != 0 {
				return fmt.Errorf("%w: %s still builds with replicas %d after setting 0 in %s; %s sets it: make it 0 there",
					ErrCannotEdit, id, r, deploymentFile, whatSets(root, k, id, deploymentFile, hasReplicas(0)))
			}
		}
		return checkSwitched(after, marked)
	})
	if err != nil {
		return false, err
	}
	return changed, nil
}
