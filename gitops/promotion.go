package gitops

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// Promotion is an edit of a Delivery's spec.promotion, and with a revert,
// of its Deployment's images.
type Promotion struct {
	// Kustomization that applies the Delivery.
	Kustomization Kustomization
	// Delivery as the Kustomization builds it.
	Delivery ObjectID
	// Exactly one of Stable, Approval and Rejection is set: what is
	// recorded, as the Delivery's API says it.
	Stable    *deliveryv1.StableRelease
	Approval  *deliveryv1.Approval
	Rejection *deliveryv1.Rejection
	// Revert, with a Rejection, sets the Deployment's containers back to
	// these images in Git.
	Revert []deliveryv1.ContainerImage
	// Deployment is the Delivery's Deployment, for Revert and parking.
	Deployment ObjectID
	// Switched are the objects Argo Rollouts writes to (see Adoption),
	// marked for Flux with a Stable record.
	Switched []ObjectID
	// ParkOnly, with Stable, only checks that Git parks the Deployment
	// and marks the switched objects: it never writes the stable record, and
	// does nothing when Git records another stable template.
	ParkOnly bool
}

// RecordPromotion edits the repository at root: it records a stable
// template (forgets the approvals of earlier candidates, and parks the
// Deployment at zero replicas, as the Rollout serves it), appends an
// approval, or records a rejection (and, with Revert, restores the
// Deployment's images). It reports false when Git already says it.
func RecordPromotion(root string, p Promotion) (bool, error) {
	k := p.Kustomization
	objs, err := locate(root, k)
	if err != nil {
		return false, err
	}
	deliveryFile, deploymentFile := fileOf(objs, p.Delivery), fileOf(objs, p.Deployment)
	if deliveryFile == "" {
		return false, fmt.Errorf("%w: no file of %s defines %s", ErrCannotEdit, k.Path, p.Delivery)
	}
	file, err := securePath(root, deliveryFile)
	if err != nil {
		return false, err
	}
	docs, err := readDocuments(file)
	if err != nil {
		return false, err
	}
	delivery := documentOf(docs, p.Delivery)
	if delivery == nil {
		return false, fmt.Errorf("%w: %s does not define %s itself (a patch or generator does); record the promotion there by hand", ErrCannotEdit, deliveryFile, p.Delivery)
	}
	before := delivery.MustString()
	promotion, err := delivery.Pipe(yaml.LookupCreate(yaml.MappingNode, "spec", "promotion"))
	if err != nil {
		return false, err
	}

	switch {
	case p.Stable != nil:
		if same(promotion.Field("stable"), p.Stable.TemplateHash) {
			// Recorded already; Git may still need to park.
			return keepParked(root, k, objs, deploymentFile, p.Deployment, p.Switched)
		}
		if p.ParkOnly {
			// Git moved on to another stable template: not this
			// Delivery's to park from what it saw.
			return false, nil
		}
		if err := setRecord(promotion, "stable", p.Stable); err != nil {
			return false, err
		}
		// Approvals were for earlier candidates.
		if err := promotion.PipeE(yaml.Clear("approvals")); err != nil {
			return false, err
		}
	case p.Approval != nil:
		approvals, err := promotion.Pipe(yaml.LookupCreate(yaml.SequenceNode, "approvals"))
		if err != nil {
			return false, err
		}
		elems, _ := approvals.Elements()
		// Approvals of other templates were for earlier candidates: they
		// go, so that the list stays within the API's bound.
		kept := approvals.YNode().Content[:0]
		for _, e := range elems {
			var recorded deliveryv1.Approval
			if err := decode(e, &recorded); err != nil || recorded.TemplateHash != p.Approval.TemplateHash {
				continue
			}
			if recorded.Step == p.Approval.Step {
				return false, nil
			}
			kept = append(kept, e.YNode())
		}
		approvals.YNode().Content = kept
		node, err := encode(p.Approval)
		if err != nil {
			return false, err
		}
		if err := approvals.PipeE(yaml.Append(node.YNode())); err != nil {
			return false, err
		}
	case p.Rejection != nil:
		if same(promotion.Field("rejection"), p.Rejection.TemplateHash) {
			return false, nil
		}
		if err := setRecord(promotion, "rejection", p.Rejection); err != nil {
			return false, err
		}
	}
	if delivery.MustString() == before {
		return false, nil
	}
	if err := writeDocuments(file, docs); err != nil {
		return false, err
	}
	if p.Stable != nil {
		// The record does not wait for the parking: when sluice cannot
		// park, keepParked leaves the files as they were, and the park
		// check that follows the record reports why.
		if _, err := keepParked(root, k, objs, deploymentFile, p.Deployment, p.Switched); err != nil && !errors.Is(err, ErrCannotEdit) {
			return false, err
		}
	}
	if p.Rejection != nil && len(p.Revert) > 0 {
		if deploymentFile == "" {
			return false, fmt.Errorf("%w: no file of %s defines %s to revert", ErrCannotEdit, k.Path, p.Deployment)
		}
		if err := revertImages(root, k, deploymentFile, p.Deployment, p.Revert); err != nil {
			return false, err
		}
	}
	return true, nil
}

// revertImages sets the images of the Deployment's containers in its file
// rel, and checks that the build of k runs them: an image a variable, the
// Kustomization's images or a kustomization's images field sets is not
// written over.
func revertImages(root string, k Kustomization, rel string, id ObjectID, images []deliveryv1.ContainerImage) error {
	var substitutedAt []string
	_, found, err := editDocument(root, rel, id, func(doc *yaml.RNode) (bool, error) {
		for _, c := range containersOf(doc) {
			for _, img := range images {
				if fieldValue(c, "name") != img.Name {
					continue
				}
				if n := c.Field("image"); n != nil && k.substitutes() && substituted(n.Value.YNode().Value) {
					substitutedAt = append(substitutedAt, fmt.Sprintf("%s:%d (%q)", rel, n.Value.YNode().Line, n.Value.YNode().Value))
					continue
				}
				if err := c.PipeE(yaml.SetField("image", yaml.NewStringRNode(img.Image))); err != nil {
					return false, err
				}
			}
		}
		return true, nil
	})
	switch {
	case err != nil:
		return err
	case !found:
		return fmt.Errorf("%w: %s does not define %s itself; restore its images by hand", ErrCannotEdit, filepath.ToSlash(rel), id)
	case len(substitutedAt) > 0:
		return fmt.Errorf("%w: the image of %s at %s is a variable the postBuild of %s substitutes; sluice writes no literal over it: revert the variable, or use rollback: record",
			ErrCannotEdit, id, strings.Join(substitutedAt, ", "), k.name())
	}
	after, err := build(root, k)
	if err != nil {
		return fmt.Errorf("%w: reverting the images breaks the build of %s: %v", ErrCannotEdit, k.Path, err)
	}
	o := find(after, id)
	if o == nil {
		return fmt.Errorf("%s is not in the build of %s", id, k.Path)
	}
	runs, err := o.satisfies(runsImages(images))
	if err != nil {
		return err
	}
	if !runs {
		return fmt.Errorf("%w: %s does not run the stable images %s once they are set in %s; %s sets them: revert them there, or use rollback: record",
			ErrCannotEdit, id, FormatImages(images), rel, whatSets(root, k, id, rel, runsImages(images)))
	}
	return nil
}

// containersOf returns the init containers and containers of a Deployment.
func containersOf(doc *yaml.RNode) []*yaml.RNode {
	var out []*yaml.RNode
	for _, list := range []string{"initContainers", "containers"} {
		containers, err := doc.Pipe(yaml.Lookup("spec", "template", "spec", list))
		if err != nil || containers == nil {
			continue
		}
		elems, _ := containers.Elements()
		out = append(out, elems...)
	}
	return out
}

// runsImages holds for a built Deployment whose containers run images.
func runsImages(images []deliveryv1.ContainerImage) func(*yaml.RNode) bool {
	return func(obj *yaml.RNode) bool {
		for _, c := range containersOf(obj) {
			for _, img := range images {
				if fieldValue(c, "name") == img.Name && fieldValue(c, "image") != img.Image {
					return false
				}
			}
		}
		return true
	}
}

// FormatImages lists images as name=image, for messages.
func FormatImages(images []deliveryv1.ContainerImage) string {
	parts := make([]string, 0, len(images))
	for _, i := range images {
		parts = append(parts, i.Name+"="+i.Image)
	}
	return strings.Join(parts, ", ")
}

// setRecord sets field of the Delivery's spec.promotion node to record.
func setRecord(promotion *yaml.RNode, field string, record any) error {
	node, err := encode(record)
	if err != nil {
		return err
	}
	return promotion.PipeE(yaml.SetField(field, node))
}

// encode turns a value of the Delivery's API into a YAML node, its fields
// in the API type's order, in block style.
func encode(v any) (*yaml.RNode, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	node, err := yaml.Parse(string(data))
	if err != nil {
		return nil, err
	}
	blockStyle(node.YNode())
	return node, nil
}

// blockStyle drops the flow style and quotes of parsed JSON: YAML quotes
// what needs it when it writes the node.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// decode reads a YAML node into a value of the Delivery's API.
func decode(node *yaml.RNode, v any) error {
	data, err := node.MarshalJSON()
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

func fieldValue(node *yaml.RNode, field string) string {
	if f := node.Field(field); f != nil {
		return f.Value.YNode().Value
	}
	return ""
}

// same tells whether a recorded stable or rejection names hash.
func same(field *yaml.MapNode, hash string) bool {
	return field != nil && fieldValue(field.Value, "templateHash") == hash
}
