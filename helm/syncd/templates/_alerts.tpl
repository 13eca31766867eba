{{/*
The alerting rule groups for this release, from files/alerts.yaml (the plain
rules file that promtool tests): the "syncd" group plus the group of the chosen
mode, with the literal defaults listed at the top of that file replaced by this
release's values, and per-alert overrides (prometheusRule.alerts) applied.
*/}}
{{- define "syncd.alertGroups" -}}
{{- $mode := include "syncd.mode" . }}
{{- $p := .Values.prometheusRule }}
{{- $file := .Files.Get "files/alerts.yaml" | fromYaml }}
{{- $job := .Values.metrics.job | toString }}
{{- $cronjob := include "syncd.fullname" . }}
{{- $threshold := mul ($p.noRecentSuccess.intervals | int) (include "syncd.syncIntervalSeconds" . | int) }}
{{- $failures := $p.repeatedFailures.threshold | int }}
{{- $ratio := $p.errorRate.ratio | toString }}
{{- $window := $p.errorRate.window | default "15m" | toString }}
{{- $defaultBase := "https://git.example.com/platform/syncd/blob/main/docs/runbook.md" }}
{{- $base := $p.runbookBaseUrl | default $defaultBase | trimSuffix "/" }}
{{- $overrides := $p.alerts | default dict }}
{{- $groups := list }}
{{- range $g := $file.groups }}
{{- if or (eq $g.name "syncd") (eq $g.name (printf "syncd-%s" $mode)) }}
{{- $rules := list }}
{{- range $r := $g.rules }}
{{- $o := get $overrides $r.alert | default dict }}
{{- if ne (toString (get $o "enabled")) "false" }}
{{- $expr := $r.expr }}
{{- /* Numbers first, so that a digit in a name cannot be caught by them. */}}
{{- if eq $r.alert "SyncdNoRecentSuccess" }}
{{- $expr = replace "900" (toString $threshold) $expr }}
{{- else if eq $r.alert "SyncdRepeatedFailures" }}
{{- $expr = replace ">= 3" (printf ">= %d" $failures) $expr }}
{{- else if has $r.alert (list "SyncdHighErrorRate" "SyncdLastRunHighErrorRate") }}
{{- $expr = replace "> 0.1" (printf "> %s" $ratio) $expr }}
{{- $expr = replace "[15m]" (printf "[%s]" $window) $expr }}
{{- end }}
{{- $expr = replace "job_name=~\"syncd-[0-9]+\"" (printf "namespace=%q, job_name=~\"%s-[0-9]+\"" $.Release.Namespace $cronjob) $expr }}
{{- $expr = replace "job=\"syncd\"" (printf "job=%q" $job) $expr }}
{{- $labels := merge (dict) (pick $o "severity") ($p.additionalAlertLabels | default dict) $r.labels }}
{{- $annotations := dict }}
{{- range $k, $v := $r.annotations }}
{{- $_ := set $annotations $k (replace $defaultBase $base $v) }}
{{- end }}
{{- $rule := dict "alert" $r.alert "expr" $expr "for" (get $o "for" | default $r.for) "labels" $labels "annotations" $annotations }}
{{- $rules = append $rules $rule }}
{{- end }}
{{- end }}
{{- $groups = append $groups (dict "name" $g.name "rules" $rules) }}
{{- end }}
{{- end }}
{{- toYaml $groups }}
{{- end }}
