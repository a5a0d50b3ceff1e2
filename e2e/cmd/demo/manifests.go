package main

import "strings"

// The sample GitOps repository: one folder, apps/, that one Flux
// Kustomization applies. It has no kustomization.yaml (Flux generates one),
// so sluice's adoption commits put each <app>-delivery.yaml next to its
// Deployment and nothing needs to list it.
const (
	namespace      = "demo"
	repoName       = "demo"
	appsPath       = "apps"
	webReplicas    = 4
	apiReplicas    = 2
	workerReplicas = 2
)

// Paths of the manifests in the repository.
const (
	webFile         = appsPath + "/web.yaml"
	apiFile         = appsPath + "/api.yaml"
	workerFile      = appsPath + "/worker.yaml"
	webDeliveryFile = appsPath + "/web-delivery.yaml"
)

// The annotations the user adds to opt a Deployment in.
const (
	webAnnotations = `  annotations:
    sluice.dev/strategy: canary
    sluice.dev/policy: web-canary
`
	apiAnnotations = `  annotations:
    sluice.dev/strategy: blue-green
    sluice.dev/policy: api-blue-green
`
)

const namespaceYAML = `apiVersion: v1
kind: Namespace
metadata:
  name: demo
`

// web is the canary: it goes to 25 %, is analysed by a web metric, waits at
// a manual gate, goes to 75 % and completes.
const webYAML = `# The storefront, delivered as a canary once annotated.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
spec:
  replicas: 4
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.example/web:v1
`

const webPolicyYAML = `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: web-canary
  namespace: demo
spec:
  canary:
    steps:
      - setWeight: 25
      - analysis:
          templates:
            - name: success-rate
          args:
            - name: image
              valueFrom:
                fieldRef:
                  fieldPath: spec.template.spec.containers[0].image
      - pause: {} # the manual gate: merge sluice's promotion branch to approve
      - setWeight: 75
  git:
    rollback: revert # a rejected release also puts the stable images back in Git
---
# Asks the demo's metric endpoint for the success rate of the image under
# analysis.
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
  namespace: demo
spec:
  args:
    - name: image
  metrics:
    - name: success-rate
      count: 1
      failureLimit: 0
      successCondition: result >= 0.99
      provider:
        web:
          url: "METRIC_URL/success-rate?image={{args.image}}"
          jsonPath: "{$.successRate}"
`

// api is the blue-green app: the switch of the active Service waits for an
// approval.
const apiYAML = `# The API, delivered blue-green once annotated.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: demo
spec:
  replicas: 2
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api
    spec:
      containers:
        - name: api
          image: registry.example/api:v1
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: demo
spec:
  selector:
    app: api
  ports:
    - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: api-preview
  namespace: demo
spec:
  selector:
    app: api
  ports:
    - port: 80
`

const apiPolicyYAML = `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: api-blue-green
  namespace: demo
spec:
  blueGreen:
    activeService: api
    previewService: api-preview
    autoPromotionEnabled: false # the switch waits for a merged approval
    scaleDownDelaySeconds: 0
`

// worker has no annotation: sluice must leave it alone.
const workerYAML = `# A background worker that is not delivered progressively.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
  namespace: demo
spec:
  replicas: 2
  selector:
    matchLabels:
      app: worker
  template:
    metadata:
      labels:
        app: worker
    spec:
      containers:
        - name: worker
          image: registry.example/worker:v1
`

// sampleRepository is the first commit of the GitOps repository; the web
// metric of the analysis points at metricURL.
func sampleRepository(metricURL string) map[string]string {
	return map[string]string{
		appsPath + "/namespace.yaml":  namespaceYAML,
		webFile:                       webYAML,
		appsPath + "/web-policy.yaml": strings.ReplaceAll(webPolicyYAML, "METRIC_URL", metricURL),
		apiFile:                       apiYAML,
		appsPath + "/api-policy.yaml": apiPolicyYAML,
		workerFile:                    workerYAML,
	}
}
