{{/* Chart name, overridable. */}}
{{- define "ringfence.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name used for every object of the release. The release name
alone when it already contains the chart name (`helm install ringfence ...`).
*/}}
{{- define "ringfence.fullname" -}}
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

{{- define "ringfence.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ringfence.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ringfence.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ringfence.labels" -}}
helm.sh/chart: {{ include "ringfence.chart" . }}
{{ include "ringfence.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "ringfence.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ringfence.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- /* The Secret keying Secret revisions: the one given, or the one the controller generates. */ -}}
{{- define "ringfence.revisionKeySecret" -}}
{{- default (printf "%s-revision-key" (include "ringfence.fullname" .)) .Values.revisionKey.existingSecret }}
{{- end }}

{{- define "ringfence.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
