// The messages of the commits sluice pushes, and their trailers.

package controllers

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// optOutMessage is the message of the commit that hands a Deployment back.
func optOutMessage(obj *deliveryv1.Delivery, replicas int32) string {
	return fmt.Sprintf(`Hand Deployment %s/%s back from sluice

Its %s annotation was removed. The Delivery leaves Git and the Deployment
serves with %d replicas again; sluice keeps the Rollout until the
Deployment's replicas are available, then removes it.`,
		obj.Namespace, obj.Spec.DeploymentRef.Name, StrategyAnnotation, replicas) +
		trailers(client.ObjectKeyFromObject(obj), "opt-out", "", nil)
}

func adoptionMessage(d *appsv1.Deployment, a gitops.Adoption) string {
	msg := fmt.Sprintf(`Adopt Deployment %s/%s for %s delivery

sluice runs the Deployment as an Argo Rollout from now on. Its serving
replicas move to the Delivery, so that Flux and sluice never own the same
field; promotions, approvals and rejections are recorded in the Delivery.`,
		d.Namespace, d.Name, a.Strategy)
	if len(a.Switched) > 0 {
		msg += fmt.Sprintf(`

Argo Rollouts writes to %s (selectors, route weights): where this
Kustomization applies them, they are annotated %s: %s,
so that Flux creates them and no longer puts back what Argo Rollouts wrote.`,
			describe(a.Switched), gitops.FluxSSAAnnotation, gitops.FluxSSAIfAbsent)
	}
	return msg
}

func parkMessage(obj *deliveryv1.Delivery, switched []gitops.ObjectID) string {
	msg := fmt.Sprintf(`Park Deployment %s/%s for sluice

The Rollout serves it. Git holds the Deployment at zero replicas, so that a
rebuilt cluster creates it at zero rather than at one replica of its
template.`, obj.Namespace, obj.Spec.DeploymentRef.Name)
	if len(switched) > 0 {
		msg += fmt.Sprintf(` What Argo Rollouts writes to (%s) is applied by
Flux only when absent, so that Flux does not put back what it wrote.`, describe(switched))
	}
	return msg
}

// commitMessage renders a policy's message template for action with data,
// or returns defaultMessage when there is no template or it renders only
// blanks; trailing newlines go, for the trailers.
func commitMessage(action, messageTemplate, defaultMessage string, data map[string]any) (string, error) {
	message := defaultMessage
	if messageTemplate != "" {
		t, err := template.New(action).Option("missingkey=error").Parse(messageTemplate)
		if err != nil {
			return "", fmt.Errorf("%w: the DeliveryPolicy's %s message template: %v", gitops.ErrCannotEdit, action, err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return "", fmt.Errorf("%w: the DeliveryPolicy's %s message template: %v", gitops.ErrCannotEdit, action, err)
		}
		// A template that renders nothing would leave the trailers as
		// the commit's subject, where Git no longer reads them.
		if strings.TrimSpace(b.String()) != "" {
			message = b.String()
		}
	}
	return strings.TrimRight(message, "\n"), nil
}

// Trailers that end every commit message sluice writes, for tools that
// read Git's history (git log --format='%(trailers)').
const (
	// TrailerDelivery names the Delivery, namespace/name.
	TrailerDelivery = "Sluice-Delivery"
	// TrailerAction is adopt, opt-out, promote, park, approve or reject.
	TrailerAction = "Sluice-Action"
	// TrailerTemplateHash is the pod template the action is about.
	TrailerTemplateHash = "Sluice-Template-Hash"
	// TrailerStep is the canary step of an approval.
	TrailerStep = "Sluice-Step"
)

// trailers are the machine-readable lines that end every message sluice
// writes: the Delivery, the action, and the template hash and gate step when
// there are.
func trailers(delivery client.ObjectKey, action, hash string, step *int32) string {
	t := fmt.Sprintf("\n\n%s: %s\n%s: %s\n", TrailerDelivery, delivery, TrailerAction, action)
	if hash != "" {
		t += fmt.Sprintf("%s: %s\n", TrailerTemplateHash, hash)
	}
	if step != nil {
		t += fmt.Sprintf("%s: %d\n", TrailerStep, *step)
	}
	return t
}

// describe lists objects for a commit message: "Service web, HTTPRoute web".
func describe(objs []gitops.ObjectID) string {
	parts := make([]string, 0, len(objs))
	for _, o := range objs {
		parts = append(parts, o.Kind+" "+o.Name)
	}
	return strings.Join(parts, ", ")
}
