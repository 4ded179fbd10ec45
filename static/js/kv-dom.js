// Small DOM helpers of the Key Visualizer. Text from nodes only ever reaches the DOM
// through text nodes (textContent), never as markup.

/** Create an element; children may be strings (text nodes) or elements. */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** replaceChildren without the null placeholders of optional parts. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

export function section(title, ...content) {
  return h("section", { class: "kv-section" }, h("h3", { text: title }), ...content);
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]));
}

/** A table head; `numeric` lists the columns aligned right. */
export function tableHead(titles, numeric = []) {
  return h("thead", {}, h("tr", {}, titles.map((t, i) => h("th", { class: numeric.includes(i) ? "num" : null, text: t }))));
}

export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
