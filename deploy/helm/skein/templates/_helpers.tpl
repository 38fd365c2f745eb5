{{/* Names and labels. */}}
{{- define "skein.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "skein.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "skein.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "skein.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "skein.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "skein.fullname" .)) -}}
{{- end -}}

{{/*
Every long-running workload the values switch on, as YAML: name -> module to run, the port it
answers on, where /healthz and /readyz are (a public API's metrics port, else its own port),
replicas, resources, extra env and which credentials it gets: only those its settings class
declares it uses (``credentials``; production requires exactly those): its own Kafka user for the
gate and the streamery, the secret key where destination or tap secrets are opened, S3 and the
spool token on the batch path.
*/}}
{{- define "skein.workloads" -}}
{{- $v := .Values -}}
gate:
  module: services.gate
  port: {{ $v.gate.port }}
  health: {{ $v.gate.metricsPort }}
  metricsPort: {{ $v.gate.metricsPort }}
  replicas: {{ $v.gate.replicas }}
  autoscaling: {{ toJson $v.gate.autoscaling }}
  resources: {{ toJson $v.gate.resources }}
  env: {{ toJson (mergeOverwrite (dict "SKEIN_GATE_HOST" "0.0.0.0" "SKEIN_GATE_METRICS_PORT" (toString $v.gate.metricsPort) "SKEIN_GATE_METRICS_DIR" "/tmp/gate-metrics") $v.gate.env) }}
  kafkaUser: gate
spool:
  module: services.spool
  port: {{ $v.spool.port }}
  health: {{ $v.spool.port }}
  metricsPort: {{ $v.spool.port }}
  replicas: {{ $v.spool.replicas }}
  resources: {{ toJson $v.spool.resources }}
  env: {{ toJson (mergeOverwrite (dict "SKEIN_SPOOL_HOST" "0.0.0.0" "SKEIN_SPOOL_METRICS_DIR" "/tmp/spool-metrics") $v.spool.env) }}
  batchPath: true
control:
  module: services.control
  port: {{ $v.control.port }}
  health: {{ $v.control.metricsPort }}
  metricsPort: {{ $v.control.metricsPort }}
  replicas: {{ $v.control.replicas }}
  resources: {{ toJson $v.control.resources }}
  env: {{ toJson (mergeOverwrite (dict "SKEIN_CONTROL_HOST" "0.0.0.0" "SKEIN_CONTROL_METRICS_PORT" (toString $v.control.metricsPort)) $v.control.env) }}
  secretKey: true
streamery:
  module: services.streamery
  port: {{ $v.streamery.port }}
  health: {{ $v.streamery.port }}
  metricsPort: {{ $v.streamery.port }}
  replicas: {{ $v.streamery.replicas }}
  resources: {{ toJson $v.streamery.resources }}
  env: {{ toJson (mergeOverwrite (dict "SKEIN_STREAMERY_METRICS_HOST" "0.0.0.0") $v.streamery.env) }}
  kafkaUser: streamery
  batchPath: true
{{- if $v.extractor.enabled }}
extractor:
  module: services.extractor
  port: {{ $v.extractor.port }}
  health: {{ $v.extractor.port }}
  metricsPort: {{ $v.extractor.port }}
  replicas: {{ $v.extractor.replicas }}
  resources: {{ toJson $v.extractor.resources }}
  env: {{ toJson (mergeOverwrite (dict "SKEIN_EXTRACTOR_HOST" "0.0.0.0" "SKEIN_EXTRACTOR_GATE_URL" (printf "http://%s-gate:%v" (include "skein.fullname" .) $v.gate.port) "SKEIN_EXTRACTOR_TAPS_DIR" "/var/cache/skein/taps" "SKEIN_EXTRACTOR_SANDBOX" "bwrap") $v.extractor.env) }}
  secretKey: true
  taps: true
{{- end }}
{{- range $type, $l := $v.loaders }}
{{- if $l.enabled }}
loader-{{ $type }}:
  module: services.loaders.{{ $type }}
  port: {{ $l.port }}
  health: {{ $l.port }}
  metricsPort: {{ $l.port }}
  replicas: {{ $l.replicas }}
  resources: {{ toJson $l.resources }}
  env: {{ toJson (mergeOverwrite (dict (printf "SKEIN_LOADER_%s_HOST" (upper $type)) "0.0.0.0") $l.env) }}
  secretKey: true
  batchPath: true
{{- end }}
{{- end }}
{{- end -}}
