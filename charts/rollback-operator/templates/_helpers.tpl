{{/*
Names are fixed, not derived from the release: the CRD, the admission policy and the people's
roles are cluster-wide and referenced by name in the docs, so one release per cluster.
*/}}

{{/* The labels every object carries (the kustomize base's, plus Helm's own). */}}
{{- define "rollback-operator.labels" -}}
app.kubernetes.io/name: rollback-operator
app.kubernetes.io/part-of: rollback-operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "rollback-operator.selectorLabels" -}}
app.kubernetes.io/name: rollback-operator
app.kubernetes.io/component: operator
{{- end }}

{{- define "rollback-operator.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The subject every binding of the operator's roles names. */}}
{{- define "rollback-operator.subject" -}}
- kind: ServiceAccount
  name: {{ .Values.serviceAccount.name }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
What the operator calls in a namespace it watches, and nothing more: each rule is a call the
code makes (docs/install.md, "Permissions"). The ClusterRole (every namespace) and each Role
(named namespaces) hold these rules.
*/}}
{{- define "rollback-operator.namespaceRules" -}}
# Kopf watches the requests and patches them (finalizer, progress annotations); Preflight
# lists a namespace's requests to take over what a failed run left changed; the ledger reads
# its request again after a write conflict, the queue the holder of a target.
- apiGroups: [rollback.lawyershub.io]
  resources: [rollbackrequests]
  verbs: [get, list, watch, patch]
# The admins' settings (RollbackPolicy `default`): which steps wait for whose approval.
- apiGroups: [rollback.lawyershub.io]
  resources: [rollbackpolicies]
  verbs: [get, list, watch]
# The ledger and status.saved.
- apiGroups: [rollback.lawyershub.io]
  resources: [rollbackrequests/status]
  verbs: [patch]
# One Event per step, on the request (kubectl describe rbr).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Report writes the post-mortem ConfigMap; Preflight reads the ConfigMap of down migrations.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
# EnableMaintenance and DisableMaintenance swap the backends (Preflight reads them).
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, patch]
# EnableMaintenance and DisableMaintenance swap the backendRefs of HTTPRoutes (Gateway API)
# (Preflight reads them); Preflight lists the ReferenceGrants of a namespace a route's
# backendRef points to, which the restore writes back.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [referencegrants]
  verbs: [list]
# Preflight checks the maintenance Service and its port.
- apiGroups: [""]
  resources: [services]
  verbs: [get]
# RevertWorkloads sets the images; Preflight reads them; RevertWorkloads and Verify follow
# the rollout by a watch on each Deployment (listed again when the watch is too old).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
# PauseAutoscaling and ResumeAutoscaling; Preflight lists the HPAs of reverted Deployments.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, patch]
# One run per target: a Lease per object a run changes, taken before its first step and
# given back at its end.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update, delete]
# The database and smoke-test Jobs: created once, then followed by a watch until they end;
# deleted only when a person aborts the run and stopping the Job is safe.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# A finished Job's pod holds what its command said (the termination message).
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# The Jobs run as a ServiceAccount of their own, without an API token, created once.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create]
# Preflight checks the backup's PersistentVolumeClaim.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get]
# The CDN token and secret webhook URLs, read when used; never logged or recorded.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Preflight reads the Argo CD Applications, Flux Kustomizations and HelmReleases and KEDA
# ScaledObjects that manage the objects a run changes; SuspendGitOps suspends them (a JSON
# patch). kubectl rollback resume-gitops puts them back as the user, not the operator.
- apiGroups: [argoproj.io]
  resources: [applications]
  verbs: [get, patch]
- apiGroups: [kustomize.toolkit.fluxcd.io]
  resources: [kustomizations]
  verbs: [get, patch]
- apiGroups: [helm.toolkit.fluxcd.io]
  resources: [helmreleases]
  verbs: [get, patch]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, patch]
{{- end }}

{{/* Kopf notices the RollbackRequest CRD being installed or upgraded after it started. */}}
{{- define "rollback-operator.crdRule" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}

{{/* The approval policy's approvers as a CEL list: [['RestoreDatabase', 'dba'], ...]
(values.schema.json holds the steps to those that take an approval). */}}
{{- define "rollback-operator.approvers" -}}
{{- $pairs := list -}}
{{- range .Values.approvals.approvers -}}
{{- if not (regexMatch "^[^'\\\\]+$" .group) }}{{ fail (printf "approvals.approvers: group %q: quotes and backslashes are not allowed" .group) }}{{ end -}}
{{- $pairs = append $pairs (printf "['%s', '%s']" .step .group) -}}
{{- end -}}
[{{ join ", " $pairs }}]
{{- end }}
