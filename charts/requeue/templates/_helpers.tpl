{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "requeue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name used for every object of the release.
*/}}
{{- define "requeue.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "requeue.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "requeue.labels" -}}
helm.sh/chart: {{ include "requeue.chart" . }}
{{ include "requeue.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: requeue
{{- end }}

{{/*
Labels that select the operator pod; never change them between releases
(a Deployment's selector is immutable).
*/}}
{{- define "requeue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "requeue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "requeue.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "requeue.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: a digest wins over a tag; the tag defaults to appVersion.
*/}}
{{- define "requeue.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Arguments of `requeue run` (the image's ENTRYPOINT is `requeue`).
*/}}
{{- define "requeue.args" -}}
- run
- --standalone
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace
- {{ . | quote }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
- --liveness
- {{ printf "http://0.0.0.0:%d/healthz" (int .Values.operator.healthPort) | quote }}
- --metrics-port
- {{ .Values.operator.metricsPort | int | toString | quote }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
RBAC rules on the requeue kinds, shared by the cluster-wide and the per-namespace roles.
Verbs are exactly what the operator does, nothing more:
  get/list/watch/patch  reconcile, add finalizers, record kopf progress
  create                a QueuePolicy's auto replay creates child DLQReplays
  delete                DLQReplay spec.ttlSecondsAfterFinished
  update .../finalizers a child DLQReplay's ownerReference has blockOwnerDeletion, which
                        clusters enforcing owner-reference permissions allow only then
  create/patch Events   every failure has a name (core and events.k8s.io)
Secrets are in requeue.secretRules: where they are readable is a value (rbac.secrets).
*/}}
{{- define "requeue.resourceRules" -}}
- apiGroups: ["requeue.dev"]
  resources: ["dlqreplays", "queuepolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["requeue.dev"]
  resources: ["dlqreplays/status", "queuepolicies/status"]
  verbs: ["patch"]
- apiGroups: ["requeue.dev"]
  resources: ["dlqreplays"]
  verbs: ["create", "delete"]
- apiGroups: ["requeue.dev"]
  resources: ["queuepolicies/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
get on Secrets: the Redis URLs and gate credentials that secretRefs name, always in the
namespace of the DLQReplay or QueuePolicy. Never list or watch: the operator reads only
the Secrets it is pointed at.
*/}}
{{- define "requeue.secretRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}

{{/*
Where the operator may read Secrets: "cluster" (every namespace) or "namespaces"
(a Role in each listed one). Fails on a combination that would grant nothing or
silently ignore a list.
*/}}
{{- define "requeue.secretScope" -}}
{{- if .Values.watchNamespaces }}
{{- if .Values.rbac.secretNamespaces }}
{{- fail "rbac.secretNamespaces is for a cluster-wide install; with watchNamespaces the operator reads Secrets exactly in the watched namespaces: leave it empty" }}
{{- end }}
{{- print "watched" }}
{{- else if eq .Values.rbac.secrets "namespaces" }}
{{- if not .Values.rbac.secretNamespaces }}
{{- fail "rbac.secrets is \"namespaces\" but rbac.secretNamespaces is empty: list the namespaces whose DLQReplays and QueuePolicies reference Secrets" }}
{{- end }}
{{- print "namespaces" }}
{{- else }}
{{- if .Values.rbac.secretNamespaces }}
{{- fail "rbac.secretNamespaces is set but rbac.secrets is \"cluster\" (Secrets readable everywhere): set rbac.secrets=namespaces to restrict them" }}
{{- end }}
{{- print "cluster" }}
{{- end }}
{{- end }}

{{/*
What kopf needs cluster-wide even when it watches a few namespaces: discovery of
CRDs and namespaces (it idles silently without them).
*/}}
{{- define "requeue.discoveryRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
