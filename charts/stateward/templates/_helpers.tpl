{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "stateward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: "<release>-<chart>", or "<release>" when the release name
already contains the chart name.
*/}}
{{- define "stateward.fullname" -}}
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

{{- define "stateward.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the operator's own objects. Deliberately not "app.kubernetes.io/managed-by=stateward":
that label marks the objects the operator manages (and watches), which these are not.
*/}}
{{- define "stateward.labels" -}}
helm.sh/chart: {{ include "stateward.chart" . }}
{{ include "stateward.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: stateward
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "stateward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stateward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stateward.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stateward.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "stateward.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "stateward.pilotImage" -}}
{{- printf "%s:%s" .Values.pilot.image.repository (default .Chart.AppVersion .Values.pilot.image.tag) }}
{{- end }}

{{/*
The permissions the operator needs on the objects it manages, in the namespaces of the
CassandraClusters it watches. Shared by the ClusterRole and the watchNamespace Role.
*/}}
{{- define "stateward.managedRules" -}}
- apiGroups: ["stateward.io"]
  resources: ["cassandraclusters"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["stateward.io"]
  resources: ["cassandraclusters/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["stateward.io"]
  resources: ["cassandraclusters/scale"]
  verbs: ["get", "patch", "update"]
# Only consulted by the OwnerReferencesPermissionEnforcement admission plugin (OpenShift,
# hardened clusters) for owner references with blockOwnerDeletion; grants nothing beyond
# "update" above.
- apiGroups: ["stateward.io"]
  resources: ["cassandraclusters/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Secrets in app namespaces: the pilots' TLS Secrets and generated superuser logins. The
# operator lists and watches only with its own label selector (its cache of what it owns);
# RBAC cannot restrict a list to a label, so this grant could enumerate every Secret. get: a
# Secret the user names (spec.authentication.superuserSecretName) is read by name. (The CAs
# live in the operator's namespace, see rbac.yaml.)
- apiGroups: [""]
  resources: ["secrets"]
  # delete: a CA an earlier version kept in the app namespace is moved out of it.
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Scale-down deletes (or, under storagePolicy.onScaleDown: Retain, annotates) the PVC of a node
# only after its decommission is verified; patch also grows volumes when storage.size grows.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  # delete: a planner-owned restart deletes a drained node's pod (by UID) so the StatefulSet
  # (OnDelete) recreates it from the new template.
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
leaderElection.enabled, true when absent (values of an older chart, kept by --reuse-values),
refused unless a boolean (a string "false" would read as true).
*/}}
{{- define "stateward.leaderElection" -}}
{{- $on := dig "enabled" true (.Values.leaderElection | default dict) -}}
{{- if not (kindIs "bool" $on) -}}
{{- fail "leaderElection.enabled must be true or false" -}}
{{- end -}}
{{- $on -}}
{{- end -}}
