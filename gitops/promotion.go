package gitops

import (
	"errors"
	"fmt"
	"path/filepath"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// ContainerImage is the image of one container.
type ContainerImage struct {
	Name, Image string
}

// StableRecord is what a promotion commit records in a Delivery.
type StableRecord struct {
	TemplateHash string
	Revision     string
	Images       []ContainerImage
	PromotedAt   string
}

// ApprovalRecord approves a candidate at a step.
type ApprovalRecord struct {
	TemplateHash string
	Step         int32
	ApprovedAt   string
}

// RejectionRecord records a rejected candidate.
type RejectionRecord struct {
	TemplateHash, Reason, AnalysisRun, Metric, RejectedAt string
}

// Promotion is an edit of a Delivery's spec.promotion, and with a revert,
// of its Deployment's images.
type Promotion struct {
	// Path of the Kustomization that applies the Delivery.
	Path string
	// Delivery as the Kustomization builds it.
	Delivery ObjectID
	// Exactly one of Stable, Approval and Rejection is set.
	Stable    *StableRecord
	Approval  *ApprovalRecord
	Rejection *RejectionRecord
	// Revert, with a Rejection, sets the Deployment's containers back to
	// these images in Git.
	Revert []ContainerImage
	// Deployment is the Delivery's Deployment, for Revert and parking.
	Deployment ObjectID
	// Services are those Argo Rollouts switches, marked for Flux with a
	// Stable record.
	Services []string
	// ParkOnly, with Stable, only checks that Git parks the Deployment
	// and marks the Services: it never writes the stable record, and
	// does nothing when Git records another stable template.
	ParkOnly bool
}

// RecordPromotion edits the repository at root: it records a stable
// template (forgets the approvals of earlier candidates, and parks the
// Deployment at zero replicas, as the Rollout serves it), appends an
// approval, or records a rejection (and, with Revert, restores the
// Deployment's images). It reports false when Git already says it.
func RecordPromotion(root string, p Promotion) (bool, error) {
	objs, err := build(root, p.Path)
	if err != nil {
		return false, err
	}
	deliveryFile, deploymentFile := fileOf(objs, p.Delivery), fileOf(objs, p.Deployment)
	if deliveryFile == "" {
		return false, fmt.Errorf("%w: no file of %s defines %s", ErrCannotEdit, p.Path, p.Delivery)
	}
	file, err := securePath(root, deliveryFile)
	if err != nil {
		return false, err
	}
	docs, err := readDocuments(file)
	if err != nil {
		return false, err
	}
	var delivery *yaml.RNode
	for _, d := range docs {
		if matches(d, p.Delivery) {
			delivery = d
		}
	}
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
		node := yaml.NewMapRNode(nil)
		setString(node, "templateHash", p.Stable.TemplateHash)
		setString(node, "revision", p.Stable.Revision)
		if len(p.Stable.Images) > 0 {
			images := yaml.NewListRNode()
			for _, i := range p.Stable.Images {
				m := yaml.NewMapRNode(nil)
				setString(m, "name", i.Name)
				setString(m, "image", i.Image)
				if err := images.PipeE(yaml.Append(m.YNode())); err != nil {
					return false, err
				}
			}
			if err := node.PipeE(yaml.SetField("images", images)); err != nil {
				return false, err
			}
		}
		if same(promotion.Field("stable"), p.Stable.TemplateHash) {
			// Recorded already; Git may still need to park.
			return keepParked(root, p.Path, objs, deploymentFile, p.Deployment, p.Services)
		}
		if p.ParkOnly {
			// Git moved on to another stable template: not this
			// Delivery's to park from what it saw.
			return false, nil
		}
		setString(node, "promotedAt", p.Stable.PromotedAt)
		if err := promotion.PipeE(yaml.SetField("stable", node)); err != nil {
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
		for _, e := range elems {
			if fieldValue(e, "templateHash") == p.Approval.TemplateHash && fieldValue(e, "step") == fmt.Sprint(p.Approval.Step) {
				return false, nil
			}
		}
		node := yaml.NewMapRNode(nil)
		setString(node, "templateHash", p.Approval.TemplateHash)
		step := yaml.NewScalarRNode(fmt.Sprint(p.Approval.Step))
		step.YNode().Tag = yaml.NodeTagInt
		if err := node.PipeE(yaml.SetField("step", step)); err != nil {
			return false, err
		}
		setString(node, "approvedAt", p.Approval.ApprovedAt)
		if err := approvals.PipeE(yaml.Append(node.YNode())); err != nil {
			return false, err
		}
	case p.Rejection != nil:
		if same(promotion.Field("rejection"), p.Rejection.TemplateHash) {
			return false, nil
		}
		node := yaml.NewMapRNode(nil)
		setString(node, "templateHash", p.Rejection.TemplateHash)
		setString(node, "reason", p.Rejection.Reason)
		setString(node, "analysisRun", p.Rejection.AnalysisRun)
		setString(node, "metric", p.Rejection.Metric)
		setString(node, "rejectedAt", p.Rejection.RejectedAt)
		if err := promotion.PipeE(yaml.SetField("rejection", node)); err != nil {
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
		if _, err := keepParked(root, p.Path, objs, deploymentFile, p.Deployment, p.Services); err != nil && !errors.Is(err, ErrCannotEdit) {
			return false, err
		}
	}
	if p.Rejection != nil && len(p.Revert) > 0 {
		if deploymentFile == "" {
			return false, fmt.Errorf("%w: no file of %s defines %s to revert", ErrCannotEdit, p.Path, p.Deployment)
		}
		if err := revertImages(root, deploymentFile, p.Deployment, p.Revert); err != nil {
			return false, err
		}
	}
	return true, nil
}

// revertImages sets the images of the Deployment's containers in its file.
func revertImages(root, rel string, id ObjectID, images []ContainerImage) error {
	_, found, err := editDocument(root, rel, id, func(doc *yaml.RNode) (bool, error) {
		for _, list := range []string{"initContainers", "containers"} {
			containers, err := doc.Pipe(yaml.Lookup("spec", "template", "spec", list))
			if err != nil || containers == nil {
				continue
			}
			elems, _ := containers.Elements()
			for _, c := range elems {
				for _, img := range images {
					if fieldValue(c, "name") == img.Name {
						if err := c.PipeE(yaml.SetField("image", yaml.NewStringRNode(img.Image))); err != nil {
							return false, err
						}
					}
				}
			}
		}
		return true, nil
	})
	if err == nil && !found {
		err = fmt.Errorf("%w: %s does not define %s itself; restore its images by hand", ErrCannotEdit, filepath.ToSlash(rel), id)
	}
	return err
}

func setString(node *yaml.RNode, field, value string) {
	if value != "" {
		_ = node.PipeE(yaml.SetField(field, yaml.NewStringRNode(value)))
	}
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
