# bench/side-table.awk — bench/side.sh's results ("builder scenario measure
# value", seconds or MB) as a markdown table: one row per measure, one column
# per builder, then minibuild / each other builder.
BEGIN {
	n = split("s1 cold=S1 cold;s1 noop=S1 no-op;s1 edit_src=S1 edit app.py;" \
		"s1 edit_req=S1 edit requirements.txt;s1 export=S1 cold + registry cache export;" \
		"s1 import=S1 fresh store, registry cache imported;" \
		"s1 import_edit=S1 fresh store, cache imported, app.py edited;" \
		"s2 cold=S2 cold (20,000 files, 200 MB);s2 noop=S2 no-op;s2 edit_src=S2 edit one file;" \
		"s3 cold=S3 cold (multi-stage);s3 noop=S3 no-op;s3 edit_src=S3 edit a/main.c;" \
		"s4 cold=S4 cold (30 RUNs);s4 noop=S4 no-op;s4 edit_src=S4 edit app.py (30 RUNs again);" \
		"s5 cold=S5 cold (6,000 files);s5 edit_src=S5 edit one file;" \
		"s5 edit_targz=S5 edit / `tar -c \\| gzip -1` of the files;" \
		"s1 store=S1 store after all runs (MB);s2 store=S2 store after all runs (MB);" \
		"s3 store=S3 store after all runs (MB);s4 store=S4 store after all runs (MB);" \
		"s5 store=S5 store after cold + 3 edits (MB);s5 store_ctx=S5 store / context size", rows, ";")
	nb = split("buildah buildkit base minibuild", order, " ")
	name["buildah"] = "buildah"; name["buildkit"] = "BuildKit"
	name["base"] = "minibuild (base)"; name["minibuild"] = "minibuild"
	short["buildah"] = "buildah"; short["buildkit"] = "BuildKit"; short["base"] = "base"
}
{ v[$2 " " $3, $1] = $4; have[$1] = 1 }
function cell(key, x) {
	if (x == "") return "–"
	if (key ~ /store$/) return sprintf("%.0f", x)
	if (key ~ /(targz|ctx)$/) return sprintf("%.2f", x)
	if (x < 1) return sprintf("%.3f", x)
	if (x < 10) return sprintf("%.2f", x)
	return sprintf("%.1f", x)
}
END {
	for (i = 1; i <= nb; i++) {
		b = order[i]
		if (!(b in have)) continue
		cols[++nc] = b
		if (("s5 edit_src", b) in v && ("s5 targz", "ref") in v)
			v["s5 edit_targz", b] = v["s5 edit_src", b] / v["s5 targz", "ref"]
		if (("s5 store", b) in v && ("s5 ctx_mb", "ref") in v)
			v["s5 store_ctx", b] = v["s5 store", b] / v["s5 ctx_mb", "ref"]
	}
	head = "| scenario · measure (median s, or MB) |"; rule = "|---|"
	for (i = 1; i <= nc; i++) { head = head " " name[cols[i]] " |"; rule = rule "---:|" }
	for (i = 1; i <= nc; i++) if (cols[i] != "minibuild") {
		head = head " minibuild / " short[cols[i]] " |"; rule = rule "---:|"
	}
	print head; print rule
	for (r = 1; r <= n; r++) {
		split(rows[r], kv, "=")
		key = kv[1]; line = "| " kv[2] " |"; any = 0
		for (i = 1; i <= nc; i++) {
			x = ((key, cols[i]) in v) ? v[key, cols[i]] : ""
			if (x != "") any = 1
			line = line " " cell(key, x) " |"
		}
		if (!any) continue
		mb = ((key, "minibuild") in v) ? v[key, "minibuild"] : ""
		for (i = 1; i <= nc; i++) if (cols[i] != "minibuild") {
			p = ((key, cols[i]) in v) ? v[key, cols[i]] : ""
			line = line " " ((mb != "" && p != "" && p > 0) ? sprintf("%.2f", mb / p) : "–") " |"
		}
		print line
	}
	if (("s5 targz", "ref") in v)
		printf "\nS5 reference: `tar -cf - CONTEXT | gzip -1` takes %.3f s over the %.0f MB context (du).\n",
			v["s5 targz", "ref"], v["s5 ctx_mb", "ref"]
}
