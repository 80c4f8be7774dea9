{{/* The chart name. */}}
{{- define "keyward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: the release name, suffixed with the chart name unless it has it. */}}
{{- define "keyward.fullname" -}}
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

{{/* Labels on everything. */}}
{{- define "keyward.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keyward
{{- end }}

{{/* Selector labels of one component: call with (dict "root" $ "component" "operator"). */}}
{{- define "keyward.selector" -}}
app.kubernetes.io/name: {{ include "keyward.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component. */}}
{{- define "keyward.componentLabels" -}}
{{ include "keyward.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "keyward.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "keyward.operatorServiceAccount" -}}
{{ include "keyward.fullname" . }}-operator
{{- end }}

{{- define "keyward.verifierServiceAccount" -}}
{{ include "keyward.fullname" . }}-verifier
{{- end }}

{{/* The restricted pod security context (Pod Security Standards "restricted"). */}}
{{- define "keyward.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "keyward.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
A Kubernetes memory quantity in bytes (as a float): plain bytes, a binary suffix (Ki, Mi,
Gi, Ti) or a decimal one (k, M, G, T). Anything else fails with the value named.
Call with (dict "what" "operator.resources.limits.memory" "value" "256Mi").
*/}}
{{- define "keyward.bytes" -}}
{{- $v := toString .value }}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$" $v) }}
{{- fail (printf "%s: %q is not a memory quantity keyward's chart reads (write e.g. 256Mi or 1Gi)" .what $v) }}
{{- end }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $v }}
{{- $suffix := trimPrefix $number $v }}
{{- $factor := get (dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000) $suffix }}
{{- mulf (float64 $number) $factor }}
{{- end }}

{{/*
Refuses a memory limit below hashWorkers x argon2 memory + 100 MiB: each argon2 run holds
argon2.memoryKiB, and the hashing pool runs hashWorkers at once.
Call with (dict "root" $ "component" "operator" "values" .Values.operator).
*/}}
{{- define "keyward.checkMemory" -}}
{{- $what := printf "%s.resources.limits.memory" .component }}
{{- $limit := ((.values.resources).limits).memory }}
{{- if not $limit }}
{{- fail (printf "%s is required: at least %s.hashWorkers x argon2.memoryKiB + 100 MiB" $what .component) }}
{{- end }}
{{- $bytes := include "keyward.bytes" (dict "what" $what "value" $limit) | float64 }}
{{- $argon2 := mulf (float64 .values.hashWorkers) (float64 .root.Values.argon2.memoryKiB) 1024 }}
{{- $needed := addf $argon2 104857600 }}
{{- if lt $bytes $needed }}
{{- fail (printf "%s %s is too small: %s.hashWorkers (%v) x argon2.memoryKiB (%v KiB) + 100 MiB needs at least %dMi" $what (toString $limit) .component .values.hashWorkers .root.Values.argon2.memoryKiB (int (ceil (divf $needed 1048576)))) }}
{{- end }}
{{- end }}

{{/* Pod scheduling fields shared by both Deployments: call with the component's values. */}}
{{- define "keyward.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}
