{{/* Names ---------------------------------------------------------------- */}}

{{- define "ragmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ragmesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The name of a component's objects: <fullname>-<suffix>. Refused rather than
truncated past 63 characters, so two pools can never end up with one name.
Call with (dict "root" $ "suffix" "embedder").
*/}}
{{- define "ragmesh.compName" -}}
{{- $n := printf "%s-%s" (include "ragmesh.fullname" .root) .suffix -}}
{{- if gt (len $n) 63 -}}
{{- fail (printf "object name %q is longer than 63 characters: shorten the release name, fullnameOverride or the pool name" $n) -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{- define "ragmesh.poolName" -}}
{{- include "ragmesh.compName" (dict "root" .root "suffix" (printf "runner-%s" .pool.name)) -}}
{{- end -}}

{{/* The in-cluster DNS name of a Service: (dict "root" $ "svc" name). */}}
{{- define "ragmesh.svcHost" -}}
{{- printf "%s.%s.svc.%s" .svc .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{- define "ragmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ragmesh.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "ragmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "ragmesh.imageTag" .) -}}
{{- end -}}

{{- define "ragmesh.toolsImage" -}}
{{- printf "%s:%s" .Values.toolsImage.repository .Values.toolsImage.tag -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------
Selector labels pick exactly one component's pods (and one pool's, for
runners). Call with (dict "root" $ "component" "llm-runner" "pool" "gpu").
*/}}
{{- define "ragmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .pool }}
ragmesh.io/pool: {{ .pool }}
{{- end }}
{{- end -}}

{{- define "ragmesh.labels" -}}
{{ include "ragmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ include "ragmesh.imageTag" .root | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: ragmesh
helm.sh/chart: {{ include "ragmesh.chart" .root }}
{{- end -}}

{{/* Release-wide labels for objects of no component (the scripts ConfigMap). */}}
{{- define "ragmesh.commonLabels" -}}
app.kubernetes.io/name: {{ include "ragmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "ragmesh.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ragmesh
helm.sh/chart: {{ include "ragmesh.chart" . }}
{{- end -}}

{{/* Runner pools -----------------------------------------------------------
A pool with every default filled in, as JSON (include ... | fromJson). Keys
are copied one by one (not mergeOverwrite, which would drop a 0 or false).
*/}}
{{- define "ragmesh.pool" -}}
{{- $p := dict "modelsClaim" "" "replicas" 1 "gpu" 0 "resources" dict "engine" dict "env" list
  "nodeSelector" dict "tolerations" list "affinity" dict "runtimeClassName" "" "priorityClassName" ""
  "topologySpreadConstraints" list "podAnnotations" dict "drain" dict -}}
{{- range $k, $v := . }}{{ $_ := set $p $k $v }}{{ end -}}
{{- $sp := dict "periodSeconds" 5 "failureThreshold" 120 -}}
{{- range $k, $v := (.startupProbe | default dict) }}{{ $_ := set $sp $k $v }}{{ end -}}
{{- $_ := set $p "startupProbe" $sp -}}
{{- $as := dict "enabled" false "mode" "keda" "minReplicas" 1 "maxReplicas" 4 "targetWaiting" 4
  "activationWaiting" 0 "query" "" "pollingInterval" 15 "cooldownPeriod" 300 "extraTriggers" list "behavior" dict -}}
{{- range $k, $v := (.autoscaling | default dict) }}{{ $_ := set $as $k $v }}{{ end -}}
{{- $_ := set $p "autoscaling" $as -}}
{{- $pdb := dict "enabled" true "maxUnavailable" 1 -}}
{{- range $k, $v := (.pdb | default dict) }}{{ $_ := set $pdb $k $v }}{{ end -}}
{{- $_ := set $p "pdb" $pdb -}}
{{- if not .servedModelName -}}
{{- $_ := set $p "servedModelName" (base .model | trimSuffix ".gguf") -}}
{{- end -}}
{{- toJson $p -}}
{{- end -}}

{{/* The model path a runner pool loads: absolute, or under models.dir. */}}
{{- define "ragmesh.poolModelPath" -}}
{{- if hasPrefix "/" .pool.model -}}{{ .pool.model }}{{- else -}}{{ printf "%s/%s" .root.Values.models.dir .pool.model }}{{- end -}}
{{- end -}}

{{/* Drain ------------------------------------------------------------------
Global drain settings overridden by a component's own; as JSON.
*/}}
{{- define "ragmesh.drain" -}}
{{- $d := dict -}}
{{- range $k, $v := .root.Values.drain }}{{ $_ := set $d $k $v }}{{ end -}}
{{- range $k, $v := (.own | default dict) }}{{ $_ := set $d $k $v }}{{ end -}}
{{- if le (int $d.terminationGracePeriodSeconds) (add $d.preStopSleepSeconds $d.shutdownGraceSeconds | int) -}}
{{- fail (printf "%s: terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + shutdownGraceSeconds (%v + %v), or Kubernetes kills the drain" .what $d.terminationGracePeriodSeconds $d.preStopSleepSeconds $d.shutdownGraceSeconds) -}}
{{- end -}}
{{- toJson $d -}}
{{- end -}}

{{/* Pod pieces ------------------------------------------------------------- */}}

{{/* The preStop sleep: the image has no shell, so Kubernetes' own sleep action. */}}
{{- define "ragmesh.lifecycle" -}}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int .preStopSleepSeconds }}
{{- end -}}

{{/*
startupProbe /ready sized for loading, readinessProbe /ready, livenessProbe
/health, all on the container port named http. (dict "startup" {...}).
*/}}
{{- define "ragmesh.probes" -}}
startupProbe:
  httpGet: {path: /ready, port: http}
  periodSeconds: {{ int .startup.periodSeconds }}
  failureThreshold: {{ int .startup.failureThreshold }}
  timeoutSeconds: 2
readinessProbe:
  httpGet: {path: /ready, port: http}
  periodSeconds: 5
  failureThreshold: 2
  timeoutSeconds: 2
livenessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: 10
  failureThreshold: 3
  timeoutSeconds: 3
{{- end -}}

{{/* Environment every binary gets: (dict "root" $ "component" c "pool" p "drain" d "http" port). */}}
{{- define "ragmesh.commonEnv" -}}
- name: RAGMESH_HOST
  value: "0.0.0.0"
- name: RAGMESH_HTTP_PORT
  value: {{ .http | quote }}
- name: RAGMESH_SHUTDOWN_GRACE_S
  value: {{ .drain.shutdownGraceSeconds | int | quote }}
{{- with .root.Values.logLevel }}
- name: RUST_LOG
  value: {{ . | quote }}
{{- end }}
- name: RAGMESH_LOG_FORMAT
  value: {{ .root.Values.logFormat | default "text" | quote }}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
{{- with .root.Values.otel }}
{{- if .enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "otel.endpoint is required when otel.enabled" .endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "ragmesh-%s" $.component | quote }}
{{- $attrs := list "service.namespace=ragmesh" (printf "service.instance.id=$(POD_NAME)") "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" "k8s.node.name=$(NODE_NAME)" (printf "ragmesh.component=%s" $.component) -}}
{{- if $.pool }}{{ $attrs = append $attrs (printf "ragmesh.pool=%s" $.pool) }}{{ end -}}
{{- range $k, $v := .resourceAttributes }}{{ $attrs = append $attrs (printf "%s=%v" $k $v) }}{{ end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- with .tracesSampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with .tracesSamplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level scheduling keys shared by every workload: (dict "v" componentValues). */}}
{{- define "ragmesh.scheduling" -}}
{{- with .v.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.topologySpreadConstraints }}
topologySpreadConstraints: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/*
Resources with nvidia.com/gpu added to requests and limits only when gpu > 0
(an extended resource: requests must equal limits). (dict "resources" r "gpu" n)
*/}}
{{- define "ragmesh.resources" -}}
{{- $r := deepCopy (.resources | default dict) -}}
{{- $gpu := int (.gpu | default 0) -}}
{{- if gt $gpu 0 -}}
{{- $req := deepCopy (get $r "requests" | default dict) -}}
{{- $lim := deepCopy (get $r "limits" | default dict) -}}
{{- $_ := set $req "nvidia.com/gpu" $gpu -}}
{{- $_ := set $lim "nvidia.com/gpu" $gpu -}}
{{- $_ := set $r "requests" $req -}}
{{- $_ := set $r "limits" $lim -}}
{{- end -}}
{{- if $r -}}
resources: {{- toYaml $r | nindent 2 }}
{{- else -}}
resources: {}
{{- end -}}
{{- end -}}

{{/* Models ------------------------------------------------------------------
The models volume of a pod: a claim, or an emptyDir the init container fills.
(dict "root" $ "claim" c "fetch" bool). A claim the init container does not
write is mounted read-only.
*/}}
{{- define "ragmesh.modelsVolume" -}}
- name: models
{{- if .claim }}
  persistentVolumeClaim:
    claimName: {{ .claim }}
    readOnly: {{ not .fetch }}
{{- else }}
  emptyDir: {{- toYaml .root.Values.models.emptyDir | nindent 4 }}
{{- end }}
{{- end -}}

{{/*
The init container running scripts/fetch-models.sh (files/ links to it) with
a models.sha256 that lists only this component's files (the script fetches
the packages whose files are missing). (dict "root" $ "sums" key).
*/}}
{{- define "ragmesh.fetchInit" -}}
- name: fetch-models
  image: {{ include "ragmesh.toolsImage" .root }}
  imagePullPolicy: {{ .root.Values.toolsImage.pullPolicy }}
  command: ["bash", "/opt/ragmesh-fetch/fetch-models.sh"]
  env:
    - name: RAGMESH_MODEL_DIR
      value: {{ .root.Values.models.dir | quote }}
    - name: HOME
      value: /tmp
    - name: PIP_NO_CACHE_DIR
      value: "1"
    - name: PIP_DISABLE_PIP_VERSION_CHECK
      value: "1"
    {{- with .root.Values.models.fetch.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  securityContext: {{- toYaml .root.Values.securityContext | nindent 4 }}
  {{- include "ragmesh.resources" (dict "resources" .root.Values.models.fetch.resources) | nindent 2 }}
  volumeMounts:
    - name: models
      mountPath: {{ .root.Values.models.dir }}
    - name: tmp
      mountPath: /tmp
    - name: fetch-script
      mountPath: /opt/ragmesh-fetch
      readOnly: true
{{- end -}}

{{- define "ragmesh.fetchVolume" -}}
- name: fetch-script
  configMap:
    name: {{ include "ragmesh.compName" (dict "root" .root "suffix" "scripts") }}
    items:
      - {key: fetch-models.sh, path: fetch-models.sh}
      - {key: {{ .sums }}, path: models.sha256}
{{- end -}}

{{/*
The lines of files/models.sha256 a component needs: those under a folder
(embedder) or naming one file (a pool). Fails when the fetch script cannot
provide them. (dict "root" $ "prefix" p) or (dict "root" $ "file" f).
*/}}
{{- define "ragmesh.sums" -}}
{{- $out := list -}}
{{- range .root.Files.Lines "files/models.sha256" -}}
{{- $f := splitList "  " . -}}
{{- if eq (len $f) 2 -}}
{{- $rel := index $f 1 -}}
{{- if or (and $.prefix (hasPrefix (printf "%s/" $.prefix) $rel)) (and $.file (eq $.file $rel)) -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $out -}}
{{- fail (printf "%s: %s is not a model that fetch-models.sh provides; put it on a PVC (models.existingClaim, or modelsClaim of the pool) with models.fetch.enabled false" .what (default .prefix .file)) -}}
{{- end -}}
{{- join "\n" $out }}
{{ end -}}

{{/* TOML ---------------------------------------------------------------------
A value as TOML. Helm reads every number as a float; whole ones are written
as integers (the gateway's usize fields refuse 4.0; its float fields take 4).
*/}}
{{- define "ragmesh.toml.value" -}}
{{- $k := kindOf . -}}
{{- if eq $k "string" -}}{{ toJson . }}
{{- else if eq $k "bool" -}}{{ . }}
{{- else if or (eq $k "float64") (eq $k "float32") -}}
{{- if eq (float64 (int64 .)) (float64 .) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else if or (hasPrefix "int" $k) (hasPrefix "uint" $k) -}}{{ . }}
{{- else if eq $k "slice" -}}
[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "ragmesh.toml.value" $e }}{{ end }}]
{{- else if eq $k "map" -}}
{{- $first := true -}}
{ {{- range $key, $val := . }}{{ if not (kindIs "invalid" $val) }}{{ if not $first }},{{ end }} {{ include "ragmesh.toml.key" $key }} = {{ include "ragmesh.toml.value" $val }}{{ $first = false }}{{ end }}{{ end }} }
{{- else -}}
{{- fail (printf "cannot write %v (%s) into the gateway's TOML config" . $k) -}}
{{- end -}}
{{- end -}}

{{- define "ragmesh.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end -}}
{{- end -}}

{{/* A table's key = value lines, nulls left out; (dict "t" map "skip" list). */}}
{{- define "ragmesh.toml.pairs" -}}
{{- range $key, $val := .t }}
{{- if and (not (kindIs "invalid" $val)) (not (has $key ($.skip | default list))) }}
{{ include "ragmesh.toml.key" $key }} = {{ include "ragmesh.toml.value" $val }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The env var an upstream target's key is read from. (dict "i" i "j" j "t" target) */}}
{{- define "ragmesh.upstreamKeyEnv" -}}
{{- if .t.api_key_env -}}{{ .t.api_key_env }}{{- else -}}{{ printf "RAGMESH_UPSTREAM_KEY_%d_%d" (int .i) (int .j) }}{{- end -}}
{{- end -}}

{{/*
The gateway's config file (gateway/src/config.rs): one [[model]] per runner
pool at its headless Service, then upstream models, profiles, keys, aliases.
*/}}
{{- define "ragmesh.gatewayToml" -}}
# Rendered by the ragmesh chart; the gateway refuses unknown keys.
{{- range .Values.runnerPools }}
{{- $p := include "ragmesh.pool" . | fromJson }}

[[model]]
name = {{ toJson $p.servedModelName }}
runners = [{{ printf "dns://%s:%d" (include "ragmesh.svcHost" (dict "root" $ "svc" (include "ragmesh.poolName" (dict "root" $ "pool" $p)))) (int $.Values.runner.grpcPort) | toJson }}]
{{- with $p.routing }}
routing = {{ toJson . }}
{{- end }}
{{- $as := $p.autoscaling | default dict }}
{{- if and $as.enabled (eq ($as.mode | default "") "keda") (lt (int $as.minReplicas) 1) }}
scale_from_zero_wait_s = {{ int $.Values.runner.scaleFromZeroWaitSeconds }}
{{- end }}
{{- end }}
{{- range $i, $m := .Values.gateway.config.upstreams }}

[[model]]
{{- include "ragmesh.toml.pairs" (dict "t" $m "skip" (list "targets")) }}
{{- range $j, $t := $m.targets }}
[[model.upstream]]
{{- include "ragmesh.toml.pairs" (dict "t" $t "skip" (list "apiKeySecret" "api_key_env")) }}
{{- if or $t.apiKeySecret $t.api_key_env }}
api_key_env = {{ include "ragmesh.upstreamKeyEnv" (dict "i" $i "j" $j "t" $t) | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- range .Values.gateway.config.profiles }}

[[profile]]
{{- include "ragmesh.toml.pairs" (dict "t" .) }}
{{- end }}
{{- range .Values.gateway.auth.hashedKeys }}

[[key]]
{{- include "ragmesh.toml.pairs" (dict "t" .) }}
{{- end }}
{{- with .Values.gateway.config.aliases }}

[aliases]
{{- include "ragmesh.toml.pairs" (dict "t" .) }}
{{- end }}
{{ end -}}

{{/* Secrets ------------------------------------------------------------------ */}}

{{- define "ragmesh.apiKeysSecret" -}}
{{- if .Values.gateway.auth.existingSecret -}}{{ .Values.gateway.auth.existingSecret }}
{{- else if .Values.gateway.auth.keys -}}{{ include "ragmesh.compName" (dict "root" . "suffix" "api-keys") }}
{{- end -}}
{{- end -}}

{{/* The key of the API-keys Secret holding one plain key for the Job and the test. */}}
{{- define "ragmesh.clientKeyKey" -}}
{{- if .Values.gateway.auth.existingSecret -}}{{ .Values.gateway.auth.clientKeySecretKey }}
{{- else if .Values.gateway.auth.keys -}}client-key
{{- end -}}
{{- end -}}

{{- define "ragmesh.qdrantSecret" -}}
{{- if .Values.retriever.qdrant.existingSecret -}}{{ .Values.retriever.qdrant.existingSecret }}
{{- else if .Values.retriever.qdrant.apiKey -}}{{ include "ragmesh.compName" (dict "root" . "suffix" "qdrant") }}
{{- end -}}
{{- end -}}

{{/* Qdrant's port, from its URL (6334, Qdrant's gRPC port, when none is given). */}}
{{- define "ragmesh.qdrantPort" -}}
{{- $host := (urlParse .Values.retriever.qdrant.url).host -}}
{{- if regexMatch ":[0-9]+$" $host -}}{{ regexFind "[0-9]+$" $host }}{{- else -}}6334{{- end -}}
{{- end -}}

{{/* The port of an http(s) URL. */}}
{{- define "ragmesh.urlPort" -}}
{{- $u := urlParse . -}}
{{- if regexMatch ":[0-9]+$" $u.host -}}{{ regexFind "[0-9]+$" $u.host }}{{- else if eq $u.scheme "https" -}}443{{- else -}}80{{- end -}}
{{- end -}}

{{/* Autoscaling ------------------------------------------------------------ */}}

{{/* An autoscaling/v2 HPA on CPU plus extra metrics: (dict "root" $ "name" n "component" c "as" autoscaling). */}}
{{- define "ragmesh.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  labels: {{- include "ragmesh.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ int .as.minReplicas }}
  maxReplicas: {{ int .as.maxReplicas }}
  metrics:
    {{- with .as.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ int . }}
    {{- end }}
    {{- with .as.metrics }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .as.behavior }}
  behavior: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
