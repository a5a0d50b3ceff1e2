package gitops

import (
	"fmt"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// DeliveryEdit is a change a person asks for: the rejection of
// spec.promotion removed, spec.suspend set or cleared, or the Deployment's
// images set to those of a recorded stable template.
type DeliveryEdit struct {
	// Kustomization that applies the Delivery.
	Kustomization Kustomization
	// Delivery as the Kustomization builds it.
	Delivery ObjectID
	// Deployment is the Delivery's Deployment, for Images.
	Deployment ObjectID

	// ClearRejection removes spec.promotion.rejection.
	ClearRejection bool
	// Suspend, when set, is written to spec.suspend (false removes it).
	Suspend *bool
	// Images, when set, are written to the Deployment's containers.
	Images []deliveryv1.ContainerImage
}

// EditDelivery applies e to the repository at root, in the files that
// define the Delivery and its Deployment, as RecordPromotion does. It
// reports false when Git already says it.
func EditDelivery(root string, e DeliveryEdit) (bool, error) {
	k := e.Kustomization
	objs, err := build(root, k)
	if err != nil {
		return false, err
	}
	changed := false
	if e.ClearRejection || e.Suspend != nil {
		deliveryFile := fileOf(objs, e.Delivery)
		if deliveryFile == "" {
			return false, fmt.Errorf("%w: no file of %s defines %s", ErrCannotEdit, k.Path, e.Delivery)
		}
		edited, found, err := editDocument(root, deliveryFile, e.Delivery, func(doc *yaml.RNode) (bool, error) {
			before := doc.MustString()
			if e.ClearRejection {
				promotion, err := doc.Pipe(yaml.Lookup("spec", "promotion"))
				if err != nil {
					return false, err
				}
				if promotion != nil {
					if err := promotion.PipeE(yaml.Clear("rejection")); err != nil {
						return false, err
					}
					if len(promotion.Content()) == 0 {
						if err := doc.PipeE(yaml.Lookup("spec"), yaml.Clear("promotion")); err != nil {
							return false, err
						}
					}
				}
			}
			if e.Suspend != nil {
				spec, err := doc.Pipe(yaml.LookupCreate(yaml.MappingNode, "spec"))
				if err != nil {
					return false, err
				}
				if *e.Suspend {
					value := yaml.NewScalarRNode("true")
					value.YNode().Tag = yaml.NodeTagBool
					err = spec.PipeE(yaml.SetField("suspend", value))
				} else {
					err = spec.PipeE(yaml.Clear("suspend"))
				}
				if err != nil {
					return false, err
				}
			}
			return doc.MustString() != before, nil
		})
		switch {
		case err != nil:
			return false, err
		case !found:
			return false, fmt.Errorf("%w: %s does not define %s itself (a patch or generator does); change it there by hand", ErrCannotEdit, deliveryFile, e.Delivery)
		}
		changed = changed || edited
	}
	if len(e.Images) > 0 {
		o := find(objs, e.Deployment)
		if o == nil || o.file == "" {
			return false, fmt.Errorf("%w: no file of %s defines %s", ErrCannotEdit, k.Path, e.Deployment)
		}
		runs, err := o.satisfies(runsImages(e.Images))
		if err != nil {
			return false, err
		}
		if runs {
			return changed, nil
		}
		if err := revertImages(root, k, o.file, e.Deployment, e.Images); err != nil {
			return false, err
		}
		changed = true
	}
	return changed, nil
}

// BuiltDelivery returns the Delivery id as the Kustomization builds it from
// the repository at root, or nil when the build has no such Delivery.
func BuiltDelivery(root string, k Kustomization, id ObjectID) (*deliveryv1.Delivery, error) {
	objs, err := build(root, k)
	if err != nil {
		return nil, err
	}
	o := find(objs, id)
	if o == nil {
		return nil, nil
	}
	d := &deliveryv1.Delivery{}
	obj, err := o.object()
	if err != nil {
		return nil, err
	}
	if err := decode(obj, d); err != nil {
		return nil, fmt.Errorf("reading %s: %w", id, err)
	}
	return d, nil
}
