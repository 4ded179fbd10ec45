// Key labels of the Key Visualizer: how a key preview from the server is split for
// display. The server decodes elastickv's key families into `*_label` ("SQS queue jobs",
// keyviz/families.py); a key without one is shown as its preview, with a reserved prefix
// ("!txn|") as a tag, hex in its own colour and the infinite ends as ∞. Pure.

/**
 * The parts of a key as shown: {kind: "inf"|"label"|"key", text, prefix, prefixTitle, hex}.
 * `reserved` is [[prefix, label]] (keyviz/keys.py RESERVED_PREFIXES, from the page).
 */
export function keyParts(text, reservedLabel, label, reserved) {
  if (text === "-inf" || text === "+inf") return { kind: "inf", text: text === "-inf" ? "−∞" : "+∞", raw: text };
  if (label) return { kind: "label", text: label, raw: text };
  const hit = reservedLabel ? reserved.find(([prefix]) => text.startsWith(prefix)) : null;
  const rest = hit ? text.slice(hit[0].length) : text;
  return {
    kind: "key",
    text: rest,
    raw: text,
    prefix: hit ? hit[0] : "",
    prefixTitle: hit ? hit[1] : "",
    hex: rest.startsWith("0x"),
  };
}

/** A row's start as one line of text (axis labels measured for overlap, CSV, titles). */
export function rowStartText(row) {
  if (row.start_label) return row.start_label;
  if (row.start_text === "-inf") return "−∞";
  return row.start_text;
}
