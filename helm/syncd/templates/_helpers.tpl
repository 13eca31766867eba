{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "syncd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. If the release name contains the chart name it is
used as is. The CronJob appends "-<minutes>" (11 digits) to its Jobs' names and
Job names must fit 63 characters, so keep this at 52.
*/}}
{{- define "syncd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "syncd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "syncd.labels" -}}
helm.sh/chart: {{ include "syncd.chart" . }}
{{ include "syncd.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ include "syncd.mode" . }}
app.kubernetes.io/part-of: syncd
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: stable across upgrades (selectors are immutable).
*/}}
{{- define "syncd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The mode, validated.
*/}}
{{- define "syncd.mode" -}}
{{- $mode := .Values.mode | toString }}
{{- if not (has $mode (list "deployment" "cronjob")) }}
{{- fail (printf "mode must be \"deployment\" or \"cronjob\", not %q" $mode) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "syncd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "syncd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "syncd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the credentials.
*/}}
{{- define "syncd.secretName" -}}
{{- default (include "syncd.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
Where the config and the secrets are mounted.
*/}}
{{- define "syncd.configDir" -}}/etc/syncd{{- end }}
{{- define "syncd.configPath" -}}/etc/syncd/syncd.yaml{{- end }}
{{- define "syncd.secretDir" -}}/var/run/secrets/syncd{{- end }}

{{/*
The configuration file: .Values.config plus what the chart owns (secret file
paths, the Pushgateway job). Refuses secret values and keys the chart sets.
*/}}
{{- define "syncd.configYaml" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $kc := get $cfg "keycloak" | default dict }}
{{- $ll := get $cfg "litellm" | default dict }}
{{- $pg := get $cfg "pushgateway" | default dict }}
{{- range $key := list "client_secret" "client_secret_file" }}
{{- if hasKey $kc $key }}
{{- fail (printf "config.keycloak.%s: do not set it here (the ConfigMap is not secret); use secrets.keycloakClientSecret or secrets.existingSecret" $key) }}
{{- end }}
{{- end }}
{{- range $key := list "api_key" "api_key_file" }}
{{- if hasKey $ll $key }}
{{- fail (printf "config.litellm.%s: do not set it here (the ConfigMap is not secret); use secrets.litellmApiKey or secrets.existingSecret" $key) }}
{{- end }}
{{- end }}
{{- if hasKey $pg "job" }}
{{- fail "config.pushgateway.job: set metrics.job instead (the alerts and the ServiceMonitor use it too)" }}
{{- end }}
{{- if not $kc.url }}{{ fail "config.keycloak.url is required" }}{{ end }}
{{- if not $kc.realm }}{{ fail "config.keycloak.realm is required" }}{{ end }}
{{- if not $ll.url }}{{ fail "config.litellm.url is required" }}{{ end }}
{{- $_ := set $kc "client_secret_file" (printf "%s/keycloak-client-secret" (include "syncd.secretDir" .)) }}
{{- $_ := set $ll "api_key_file" (printf "%s/litellm-api-key" (include "syncd.secretDir" .)) }}
{{- $_ := set $pg "job" (.Values.metrics.job | toString) }}
{{- $_ := set $cfg "keycloak" $kc }}
{{- $_ := set $cfg "litellm" $ll }}
{{- $_ := set $cfg "pushgateway" $pg }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Seconds between two syncs, for SyncdNoRecentSuccess.
*/}}
{{- define "syncd.syncIntervalSeconds" -}}
{{- $p := .Values.prometheusRule.noRecentSuccess }}
{{- if $p.intervalSeconds }}
{{- $p.intervalSeconds | int }}
{{- else if eq (include "syncd.mode" .) "cronjob" }}
{{- .Values.cronjob.intervalSeconds | int }}
{{- else }}
{{- $s := .Values.config.schedule | default dict }}
{{- if $s.cron }}
{{- fail "config.schedule.cron is set: set prometheusRule.noRecentSuccess.intervalSeconds to the seconds between two scheduled runs" }}
{{- end }}
{{- $s.interval_seconds | default 300 | int }}
{{- end }}
{{- end }}

{{/*
The pod spec shared by the Deployment and the CronJob. Call with
(dict "ctx" $ "args" (list ...) "daemon" true|false).
*/}}
{{- define "syncd.podSpec" -}}
{{- $ := .ctx }}
{{- $daemon := .daemon -}}
serviceAccountName: {{ include "syncd.serviceAccountName" $ }}
automountServiceAccountToken: {{ $.Values.automountServiceAccountToken }}
enableServiceLinks: false
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
{{- if $daemon }}
terminationGracePeriodSeconds: {{ $.Values.terminationGracePeriodSeconds }}
{{- end }}
containers:
  - name: syncd
    image: {{ include "syncd.image" $ }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    args:
      {{- toYaml (concat .args $.Values.extraArgs) | nindent 6 }}
    {{- with $.Values.extraEnv }}
    env:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $.Values.extraEnvFrom }}
    envFrom:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- if $daemon }}
    ports:
      - name: http-metrics
        containerPort: {{ $.Values.config.server.port | default 9108 }}
        protocol: TCP
    livenessProbe:
      httpGet:
        path: /healthz
        port: http-metrics
      {{- toYaml $.Values.livenessProbe | nindent 6 }}
    readinessProbe:
      httpGet:
        path: /readyz
        port: http-metrics
      {{- toYaml $.Values.readinessProbe | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml $.Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml $.Values.resources | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: {{ include "syncd.configDir" $ }}
        readOnly: true
      - name: secrets
        mountPath: {{ include "syncd.secretDir" $ }}
        readOnly: true
      {{- if $.Values.tmpVolume.enabled }}
      - name: tmp
        mountPath: /tmp
      {{- end }}
      {{- with $.Values.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "syncd.fullname" $ }}
  - name: secrets
    secret:
      secretName: {{ include "syncd.secretName" $ }}
      defaultMode: 0440
      items:
        - key: {{ if $.Values.secrets.existingSecret }}{{ $.Values.secrets.existingSecretKeys.keycloakClientSecret }}{{ else }}keycloak-client-secret{{ end }}
          path: keycloak-client-secret
        - key: {{ if $.Values.secrets.existingSecret }}{{ $.Values.secrets.existingSecretKeys.litellmApiKey }}{{ else }}litellm-api-key{{ end }}
          path: litellm-api-key
  {{- if $.Values.tmpVolume.enabled }}
  - name: tmp
    emptyDir:
      medium: Memory
      sizeLimit: {{ $.Values.tmpVolume.sizeLimit }}
  {{- end }}
  {{- with $.Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Pod template annotations: checksums roll the pods (Deployment) when the
configuration or the chart-managed Secret changes.
*/}}
{{- define "syncd.podAnnotations" -}}
checksum/config: {{ include "syncd.configYaml" . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
