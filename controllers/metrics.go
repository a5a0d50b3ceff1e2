package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// sluice's own metrics, beside Flux's gotk_reconcile_* ones.
var (
	deliveryPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_delivery_phase",
		Help: "The phase of each Delivery: one series per Delivery, at 1, labelled with its current phase.",
	}, []string{"namespace", "name", "phase"})

	promotions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_promotions_total",
		Help: "Manual gates sluice promoted after an approval merged through Git.",
	}, []string{"namespace", "name"})

	rejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_rejections_total",
		Help: "Candidates Argo Rollouts aborted.",
	}, []string{"namespace", "name"})
)

var allPhases = []deliveryv1.DeliveryPhase{
	deliveryv1.PhasePending, deliveryv1.PhaseHandover, deliveryv1.PhaseProgressing,
	deliveryv1.PhaseWaitingForApproval, deliveryv1.PhaseHealthy, deliveryv1.PhaseRejected,
	deliveryv1.PhaseHandingBack, deliveryv1.PhaseFailed,
}

func init() {
	metrics.Registry.MustRegister(deliveryPhase, promotions, rejections)
}

// recordPhase sets the phase gauge of a Delivery: one series, at 1, for the
// phase it is in; the series of the phase it left, or of all when it is
// gone, are removed. A fleet's thousand Deliveries make a thousand series,
// not one per phase each.
func recordPhase(obj *deliveryv1.Delivery, gone bool) {
	for _, p := range allPhases {
		labels := prometheus.Labels{"namespace": obj.Namespace, "name": obj.Name, "phase": string(p)}
		if !gone && p == obj.Status.Phase {
			deliveryPhase.With(labels).Set(1)
			continue
		}
		deliveryPhase.Delete(labels)
	}
}

// Collectors are sluice's own metrics the controllers register, for what
// reads their names (the dashboard and alert rules of config/monitoring).
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{deliveryPhase, promotions, rejections}
}
