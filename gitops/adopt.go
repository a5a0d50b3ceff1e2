package gitops

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// AdoptedAnnotation marks a Delivery that an adoption wrote: removing the
// Deployment's strategy annotation hands that Deployment back.
const AdoptedAnnotation = "sluice.dev/adopted"

// Adoption is the change that hands one annotated Deployment to sluice.
type Adoption struct {
	// Kustomization that applies the Deployment.
	Kustomization Kustomization
	// Deployment as the Kustomization builds it.
	Deployment ObjectID
	// Strategy and Policy from the Deployment's annotations; Policy may be
	// empty.
	Strategy, Policy string
	// LiveReplicas is what the Deployment runs now, for when Git sets no
	// replicas.
	LiveReplicas int32
	// Switched are the objects Argo Rollouts writes to for the
	// Deployment's policy: the Services whose selectors it switches and
	// the HTTPRoute whose weights it sets (no namespace: the
	// Deployment's). Those the Kustomization applies get Flux's ssa:
	// IfNotPresent annotation, so that Flux does not put back what Argo
	// Rollouts wrote.
	Switched []ObjectID
}

// Flux's server-side apply policy annotation, and the value with which
// kustomize-controller creates an object and then leaves it alone; and the
// annotation that keeps postBuild from substituting variables in an object.
const (
	FluxSSAAnnotation        = "kustomize.toolkit.fluxcd.io/ssa"
	FluxSSAIfAbsent          = "IfNotPresent"
	FluxSubstituteAnnotation = "kustomize.toolkit.fluxcd.io/substitute"
)

// DeliveryKind is the kind of the objects sluice records promotions in.
const DeliveryKind = "Delivery"

// Adopted says what Adopt changed.
type Adopted struct {
	// DeploymentFile and DeliveryFile are repository-relative.
	DeploymentFile, DeliveryFile string
	// Replicas moved from the Deployment to the Delivery.
	Replicas int32
	// Switched are the files of the switched objects the adoption
	// annotated for Flux.
	Switched []string
}

// Adopt edits the repository at root for an adoption: it adds a Delivery
// manifest next to the file that defines the Deployment (registered in that
// folder's kustomization.yaml when there is one) and moves the serving
// replica count out of the Deployment, from its file or from a
// kustomization's replicas field, into the Delivery. It reports false when
// the repository already says all of it, and ErrCannotEdit when it cannot
// make the change safely.
func Adopt(root string, a Adoption) (Adopted, bool, error) {
	k := a.Kustomization
	objs, err := locate(root, k)
	if err != nil {
		return Adopted{}, false, err
	}
	deployment := find(objs, a.Deployment)
	if deployment == nil {
		return Adopted{}, false, fmt.Errorf("%s is not in the build of %s", a.Deployment, k.Path)
	}
	if deployment.file == "" {
		return Adopted{}, false, fmt.Errorf("%w: kustomize cannot tell which file defines %s (a generator, a remote base, or a patch that replaces its annotations?)", ErrCannotEdit, a.Deployment)
	}
	// A Delivery for the Deployment in the build is the user's or an
	// earlier adoption's, and Git's word: Git says adopted already.
	for _, o := range objs {
		if o.id.Kind == DeliveryKind && o.id.Name == a.Deployment.Name && o.file != "" {
			replicas, err := o.lookup("spec", "replicas")
			if err != nil {
				return Adopted{}, false, err
			}
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
	n, err := deployment.lookup("spec", "replicas")
	if err != nil {
		return Adopted{}, false, err
	}
	if n != nil {
		var r int32
		if _, err := fmt.Sscan(n.YNode().Value, &r); err == nil && r > 0 {
			out.Replicas = r
		}
	}

	line, err := literalField(root, k, deployment.file, a.Deployment, "spec", "replicas")
	if err != nil {
		return Adopted{}, false, err
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
	for _, dir := range []string{k.Path, path.Dir(deployment.file)} {
		removed, err := removeReplicasEntry(root, dir, a.Deployment.Name)
		if err != nil {
			return Adopted{}, false, err
		}
		changed = changed || removed
	}

	doc, err := documentIn(file, a.Deployment)
	if err != nil {
		return Adopted{}, false, err
	}
	// A Delivery that is already there is the user's or an earlier
	// adoption's, and Git's word: it is not written over.
	out.DeliveryFile = path.Join(path.Dir(deployment.file), doc.GetName()+"-delivery.yaml")
	deliveryPath, err := securePath(root, out.DeliveryFile)
	if err != nil {
		return Adopted{}, false, err
	}
	if _, err := os.Stat(deliveryPath); os.IsNotExist(err) {
		if err := writeFile(deliveryPath, []byte(deliveryManifest(a, doc, out.Replicas))); err != nil {
			return Adopted{}, false, err
		}
		changed = true
	} else if err != nil {
		return Adopted{}, false, err
	}
	registered, err := registerResource(root, listingKustomization(root, k.Path, deployment.file), out.DeliveryFile)
	if err != nil {
		return Adopted{}, false, err
	}
	changed = changed || registered

	switched, annotated, err := markSwitched(root, objs, a.Deployment.Namespace, a.Switched)
	if err != nil {
		return Adopted{}, false, err
	}
	changed = changed || annotated
	for _, s := range switched {
		out.Switched = append(out.Switched, s.file)
	}

	// Check the result as Flux will build it: the Deployment without
	// replicas and the Delivery, for the Deployment, in the build.
	err = checkBuild(root, k, objs, changed, func(err error) error {
		return fmt.Errorf("%w: the adoption breaks the build of %s: %v", ErrCannotEdit, k.Path, err)
	}, func(after []built) error {
		if o := find(after, a.Deployment); o != nil {
			n, err := o.lookup("spec", "replicas")
			if err != nil {
				return err
			}
			if n != nil {
				return fmt.Errorf("%w: %s:%d: spec.replicas of %s is set by %s, not by its file: remove it there and let the Delivery hold replicas: %d",
					ErrCannotEdit, deployment.file, line, a.Deployment, whatSets(root, k, a.Deployment, deployment.file, hasNo("spec", "replicas")), out.Replicas)
			}
		}
		delivery := find(after, ObjectID{Kind: DeliveryKind, Namespace: a.Deployment.Namespace, Name: a.Deployment.Name})
		if delivery == nil {
			return fmt.Errorf("%w: %s is not in the build of %s as Delivery %s; add it to the kustomization that includes %s",
				ErrCannotEdit, out.DeliveryFile, k.Path, a.Deployment.Name, deployment.file)
		}
		ref, err := delivery.lookup("spec", "deploymentRef", "name")
		if err != nil {
			return err
		}
		if ref == nil || ref.YNode().Value != a.Deployment.Name {
			return fmt.Errorf("%w: %s builds with a deploymentRef other than %s; a transformer of %s renames it",
				ErrCannotEdit, out.DeliveryFile, a.Deployment.Name, k.Path)
		}
		return checkSwitched(after, switched)
	})
	if err != nil {
		return Adopted{}, false, err
	}
	return out, changed, nil
}

// hasNo holds for a built object that does not set the field at fields.
func hasNo(fields ...string) func(*yaml.RNode) bool {
	return func(obj *yaml.RNode) bool {
		n, _ := obj.Pipe(yaml.Lookup(fields...))
		return n == nil
	}
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

// documentIn returns the document of the file that defines the built
// object id.
func documentIn(file string, id ObjectID) (*yaml.RNode, error) {
	docs, err := readDocuments(file)
	if err != nil {
		return nil, err
	}
	doc := documentOf(docs, id)
	if doc == nil {
		return nil, fmt.Errorf("no document of %s defines %s", filepath.Base(file), id)
	}
	return doc, nil
}

// deliveryManifest is the Delivery an adoption adds beside the
// Deployment's document doc. It takes the document's name and namespace,
// so that the build names it as the Deployment whatever prefix, suffix or
// namespace it gives them, and refers to the Deployment by its built name.
func deliveryManifest(a Adoption, doc *yaml.RNode, replicas int32) string {
	var b strings.Builder
	b.WriteString("# Added by sluice when it adopted the Deployment for progressive delivery.\n")
	b.WriteString("# sluice records promotions, approvals and rejections here. Remove the\n")
	b.WriteString("# Deployment's sluice.dev/strategy annotation to hand it back: sluice then\n")
	b.WriteString("# removes this file and gives the Deployment its replicas again.\n")
	b.WriteString("apiVersion: delivery.sluice.dev/v1alpha1\nkind: Delivery\nmetadata:\n")
	fmt.Fprintf(&b, "  name: %s\n", doc.GetName())
	if ns := doc.GetNamespace(); ns != "" {
		fmt.Fprintf(&b, "  namespace: %s\n", ns)
	}
	fmt.Fprintf(&b, "  annotations:\n    %s: %q\n", AdoptedAnnotation, "true")
	if a.Kustomization.substitutes() {
		// What sluice records (a rejection's reason) is never read as a
		// variable.
		fmt.Fprintf(&b, "    %s: %s\n", FluxSubstituteAnnotation, "disabled")
	}
	fmt.Fprintf(&b, "spec:\n  deploymentRef:\n    name: %s\n  strategy: %s\n", a.Deployment.Name, a.Strategy)
	if a.Policy != "" {
		fmt.Fprintf(&b, "  policyRef:\n    name: %s\n", a.Policy)
	}
	fmt.Fprintf(&b, "  replicas: %d\n", replicas)
	return b.String()
}
