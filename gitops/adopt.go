package gitops

import (
	"fmt"
	"os"
	"path"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// AdoptedAnnotation marks a Delivery that an adoption wrote: removing the
// Deployment's strategy annotation hands that Deployment back.
const AdoptedAnnotation = "sluice.dev/adopted"

// Adoption is the change that hands one annotated Deployment to sluice.
type Adoption struct {
	// Path of the Kustomization in the repository, as in its spec.path.
	Path string
	// Deployment as the Kustomization builds it.
	Deployment ObjectID
	// Strategy and Policy from the Deployment's annotations; Policy may be
	// empty.
	Strategy, Policy string
	// LiveReplicas is what the Deployment runs now, for when Git sets no
	// replicas.
	LiveReplicas int32
	// Services are the names of the Services Argo Rollouts switches for
	// the Deployment's policy. Those the Kustomization applies get Flux's
	// ssa: IfNotPresent annotation, so that Flux does not put back the
	// selectors Argo sets.
	Services []string
}

// Flux's server-side apply policy annotation, and the value with which
// kustomize-controller creates an object and then leaves it alone.
const (
	FluxSSAAnnotation = "kustomize.toolkit.fluxcd.io/ssa"
	FluxSSAIfAbsent   = "IfNotPresent"
)

// Adopted says what Adopt changed.
type Adopted struct {
	// DeploymentFile and DeliveryFile are repository-relative.
	DeploymentFile, DeliveryFile string
	// Replicas moved from the Deployment to the Delivery.
	Replicas int32
	// Services that the adoption annotated for Flux, by file.
	Services []string
}

// Adopt edits the repository at root for an adoption: it adds a Delivery
// manifest next to the file that defines the Deployment (registered in that
// folder's kustomization.yaml when there is one) and moves the serving
// replica count out of the Deployment, from its file or from a
// kustomization's replicas field, into the Delivery. It reports false when
// the repository already says all of it, and ErrCannotEdit when it cannot
// make the change safely.
func Adopt(root string, a Adoption) (Adopted, bool, error) {
	objs, err := build(root, a.Path)
	if err != nil {
		return Adopted{}, false, err
	}
	var deployment *built
	for i := range objs {
		o := &objs[i]
		if o.id.matches(a.Deployment) {
			deployment = o
			break
		}
	}
	if deployment == nil {
		return Adopted{}, false, fmt.Errorf("%s is not in the build of %s", a.Deployment, a.Path)
	}
	if deployment.file == "" {
		return Adopted{}, false, fmt.Errorf("%w: kustomize cannot tell which file defines %s (a generator or a remote base?)", ErrCannotEdit, a.Deployment)
	}
	// A Delivery for the Deployment in the build is the user's or an
	// earlier adoption's, and Git's word: Git says adopted already.
	for _, o := range objs {
		if o.id.Kind == "Delivery" && o.id.Name == a.Deployment.Name && o.file != "" {
			replicas, _ := o.obj.Pipe(yaml.Lookup("spec", "replicas"))
			out := Adopted{DeploymentFile: deployment.file, DeliveryFile: o.file, Replicas: a.LiveReplicas}
			if replicas != nil {
				_, _ = fmt.Sscan(replicas.YNode().Value, &out.Replicas)
			}
			return out, false, nil
		}
	}

	// The serving replicas are Git's, unless Git parks the Deployment at
	// zero (an earlier adoption whose Delivery left Git): then what runs,
	// and never a Delivery at zero.
	out := Adopted{DeploymentFile: deployment.file, Replicas: max(a.LiveReplicas, 1)}
	if n, err := deployment.obj.Pipe(yaml.Lookup("spec", "replicas")); err == nil && n != nil {
		var r int32
		if _, err := fmt.Sscan(n.YNode().Value, &r); err == nil && r > 0 {
			out.Replicas = r
		}
	}

	changed := false
	file, err := securePath(root, deployment.file)
	if err != nil {
		return Adopted{}, false, err
	}
	removed, err := removeReplicasFromFile(root, deployment.file, a.Deployment)
	if err != nil {
		return Adopted{}, false, fmt.Errorf("%s: %w", deployment.file, err)
	}
	changed = changed || removed
	for _, dir := range []string{a.Path, path.Dir(deployment.file)} {
		removed, err := removeReplicasEntry(root, dir, a.Deployment.Name)
		if err != nil {
			return Adopted{}, false, err
		}
		changed = changed || removed
	}

	namespace, err := fileNamespace(file, a.Deployment)
	if err != nil {
		return Adopted{}, false, err
	}
	// A Delivery that is already there is the user's or an earlier
	// adoption's, and Git's word: it is not written over.
	out.DeliveryFile = path.Join(path.Dir(deployment.file), a.Deployment.Name+"-delivery.yaml")
	deliveryPath, err := securePath(root, out.DeliveryFile)
	if err != nil {
		return Adopted{}, false, err
	}
	if _, err := os.Stat(deliveryPath); os.IsNotExist(err) {
		if err := os.WriteFile(deliveryPath, []byte(deliveryManifest(a, namespace, out.Replicas)), 0o644); err != nil {
			return Adopted{}, false, err
		}
		changed = true
	} else if err != nil {
		return Adopted{}, false, err
	}
	registered, err := registerResource(root, path.Dir(deployment.file), path.Base(out.DeliveryFile))
	if err != nil {
		return Adopted{}, false, err
	}
	changed = changed || registered

	services, annotated, err := markSwitchedServices(root, objs, a.Deployment.Namespace, a.Services)
	if err != nil {
		return Adopted{}, false, err
	}
	changed = changed || annotated
	for _, s := range services {
		out.Services = append(out.Services, s.file)
	}

	// Check the result as Flux will build it: the Deployment without
	// replicas and the Delivery in the build.
	after, err := build(root, a.Path)
	if err != nil {
		return Adopted{}, false, fmt.Errorf("%w: the adoption breaks the build of %s: %v", ErrCannotEdit, a.Path, err)
	}
	delivered := false
	for _, o := range after {
		if o.id.Kind == a.Deployment.Kind && o.id.Name == a.Deployment.Name {
			if n, _ := o.obj.Pipe(yaml.Lookup("spec", "replicas")); n != nil {
				return Adopted{}, false, fmt.Errorf("%w: spec.replicas of %s is still set once removed from %s; it comes from a patch or a kustomization sluice does not edit: remove it there and add replicas: %d to the Delivery",
					ErrCannotEdit, a.Deployment, deployment.file, out.Replicas)
			}
		}
		if o.id.Kind == "Delivery" && o.id.Name == a.Deployment.Name {
			delivered = true
		}
	}
	if err := checkSwitchedServices(after, services); err != nil {
		return Adopted{}, false, err
	}
	if !delivered {
		return Adopted{}, false, fmt.Errorf("%w: %s is not in the build of %s; add it to the kustomization that includes %s",
			ErrCannotEdit, out.DeliveryFile, a.Path, deployment.file)
	}
	return out, changed, nil
}

// removeReplicasFromFile clears spec.replicas of the Deployment's document
// in the repository file rel.
func removeReplicasFromFile(root, rel string, id ObjectID) (bool, error) {
	changed, found, err := editDocument(root, rel, id, func(doc *yaml.RNode) (bool, error) {
		spec, err := doc.Pipe(yaml.Lookup("spec"))
		if err != nil || spec == nil || spec.Field("replicas") == nil {
			return false, err
		}
		return true, spec.PipeE(yaml.Clear("replicas"))
	})
	if err == nil && !found {
		err = fmt.Errorf("no document defines %s", id)
	}
	return changed, err
}

// removeReplicasEntry removes the entry for name from the replicas field of
// the kustomization in dir, if there is one.
func removeReplicasEntry(root, dir, name string) (bool, error) {
	kfile, k, err := readKustomization(root, dir)
	if err != nil || k == nil {
		return false, err
	}
	list := k.Field("replicas")
	if list == nil {
		return false, nil
	}
	elems, err := list.Value.Elements()
	if err != nil {
		return false, err
	}
	kept := list.Value.YNode().Content[:0]
	removed := false
	for _, e := range elems {
		if n := e.Field("name"); n != nil && n.Value.YNode().Value == name {
			removed = true
			continue
		}
		kept = append(kept, e.YNode())
	}
	if !removed {
		return false, nil
	}
	list.Value.YNode().Content = kept
	if len(kept) == 0 {
		if err := k.PipeE(yaml.Clear("replicas")); err != nil {
			return false, err
		}
	}
	return true, writeDocuments(kfile, []*yaml.RNode{k})
}

// fileNamespace returns the namespace the Deployment's document sets, if
// any, so that the Delivery lands beside it.
func fileNamespace(file string, id ObjectID) (string, error) {
	docs, err := readDocuments(file)
	if err != nil {
		return "", err
	}
	for _, doc := range docs {
		if matches(doc, id) {
			return doc.GetNamespace(), nil
		}
	}
	return "", nil
}

// registerResource lists name in the resources of dir's kustomization,
// when dir has one.
func registerResource(root, dir, name string) (bool, error) {
	kfile, k, err := readKustomization(root, dir)
	if err != nil || k == nil {
		return false, err
	}
	resources := k.Field("resources")
	if resources != nil {
		elems, err := resources.Value.Elements()
		if err != nil {
			return false, err
		}
		for _, e := range elems {
			if strings.TrimPrefix(e.YNode().Value, "./") == name {
				return false, nil
			}
		}
		resources.Value.YNode().Content = append(resources.Value.YNode().Content, yaml.NewStringRNode(name).YNode())
	} else if err := k.PipeE(yaml.SetField("resources", yaml.NewListRNode(name))); err != nil {
		return false, err
	}
	return true, writeDocuments(kfile, []*yaml.RNode{k})
}

// deliveryManifest is the Delivery an adoption adds.
func deliveryManifest(a Adoption, namespace string, replicas int32) string {
	var b strings.Builder
	b.WriteString("# Added by sluice when it adopted the Deployment for progressive delivery.\n")
	b.WriteString("# sluice records promotions, approvals and rejections here. Remove the\n")
	b.WriteString("# Deployment's sluice.dev/strategy annotation to hand it back: sluice then\n")
	b.WriteString("# removes this file and gives the Deployment its replicas again.\n")
	b.WriteString("apiVersion: delivery.sluice.dev/v1alpha1\nkind: Delivery\nmetadata:\n")
	fmt.Fprintf(&b, "  name: %s\n", a.Deployment.Name)
	if namespace != "" {
		fmt.Fprintf(&b, "  namespace: %s\n", namespace)
	}
	fmt.Fprintf(&b, "  annotations:\n    %s: %q\n", AdoptedAnnotation, "true")
	fmt.Fprintf(&b, "spec:\n  deploymentRef:\n    name: %s\n  strategy: %s\n", a.Deployment.Name, a.Strategy)
	if a.Policy != "" {
		fmt.Fprintf(&b, "  policyRef:\n    name: %s\n", a.Policy)
	}
	fmt.Fprintf(&b, "  replicas: %d\n", replicas)
	return b.String()
}

// readKustomization reads the kustomization.yaml of dir; k is nil when dir
// has none.
func readKustomization(root, dir string) (file string, k *yaml.RNode, err error) {
	abs, err := securePath(root, dir)
	if err != nil {
		return "", nil, err
	}
	file = findKustomization(abs)
	if file == "" {
		return "", nil, nil
	}
	docs, err := readDocuments(file)
	if err != nil {
		return "", nil, err
	}
	if len(docs) != 1 {
		return "", nil, fmt.Errorf("%w: %s holds %d documents, not one kustomization", ErrCannotEdit, relTo(root, file), len(docs))
	}
	return file, docs[0], nil
}

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
