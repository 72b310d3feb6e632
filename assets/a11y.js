/*
 * VoxelBoard: names and roles for screen readers where Dash's components cannot be given
 * them (loaded by Dash from assets/; tests/app/test_accessibility_browser.py runs axe-core).
 *
 * dcc.Slider, dcc.RadioItems, dcc.Checklist and dcc.Dropdown take no aria-* properties, so a
 * <label for="id"> (components.labelled, components.screen_reader_label) names them here:
 *  - a slider's thumbs (role="slider") and its number box get aria-labelledby the label;
 *  - a dropdown's button is named by the label before its value ("Snapshot FINAL"), also
 *    when the label wraps it after a caption (<label><span>Config</span>...</label>);
 *  - RadioItems / Checklist draw native radio buttons and checkboxes, each inside a <label>
 *    that carries role="option" in a role="listbox" box: an interactive control inside an
 *    option, which screen readers announce wrongly. The native controls are kept (they give
 *    the keyboard behaviour) and the box becomes a radiogroup / group of them.
 *  - AG Grid's row-selection column has no header text: its header cell gets one, read by
 *    screen readers and not drawn.
 * A MutationObserver applies this to each page as Dash renders it; it only writes an
 * attribute that differs, so its own writes end the loop at once.
 */
(function () {
  "use strict";

  var NATIVE = {INPUT: 1, SELECT: 1, TEXTAREA: 1, METER: 1, OUTPUT: 1, PROGRESS: 1};
  var labelIds = 0;

  function set(el, name, value) {
    if (el.getAttribute(name) !== value) el.setAttribute(name, value);
  }

  function unset(el, name) {
    if (el.hasAttribute(name)) el.removeAttribute(name);
  }

  function labelId(label) {
    if (!label.id) label.id = "vb-label-" + (++labelIds);
    return label.id;
  }

  function nameDropdown(button, id) {
    var own = (button.getAttribute("aria-labelledby") || "").split(" ");
    if (own[0] !== id) set(button, "aria-labelledby", [id].concat(own).join(" ").trim());
  }

  function nameControl(label) {
    var control = document.getElementById(label.htmlFor);
    if (!control || NATIVE[control.tagName]) return;
    var id = labelId(label);
    if (control.classList.contains("dash-dropdown")) {
      nameDropdown(control, id);
      return;
    }
    control.querySelectorAll('[role="slider"], input').forEach(function (part) {
      if (part.type !== "radio" && part.type !== "checkbox") set(part, "aria-labelledby", id);
    });
    if (control.classList.contains("dash-options-list")) set(control, "aria-labelledby", id);
  }

  function nativeOptions(list) {
    var radios = list.querySelector('input[type="radio"]') !== null;
    set(list, "role", radios ? "radiogroup" : "group");
    list.querySelectorAll(".dash-options-list-option").forEach(function (option) {
      unset(option, "role");
      unset(option, "aria-selected");
    });
  }

  // <label><span>Config</span><Dropdown/></label>: the caption before the dropdown names it
  function nameWrappedDropdown(button) {
    var label = button.closest("label");
    var caption = label && !label.htmlFor ? label.firstElementChild : null;
    if (caption && !caption.contains(button)) nameDropdown(button, labelId(caption));
  }

  // AG Grid's row-selection column has an empty header cell: it gets a name read, not drawn
  function nameSelectionHeader(cell) {
    if (cell.querySelector(".vb-sr-only")) return;
    var name = document.createElement("span");
    name.className = "vb-sr-only";
    name.textContent = "Selected";
    cell.appendChild(name);
  }

  function apply() {
    document.querySelectorAll("label[for]").forEach(nameControl);
    document.querySelectorAll("label button.dash-dropdown").forEach(nameWrappedDropdown);
    document.querySelectorAll(".dash-options-list").forEach(nativeOptions);
    document.querySelectorAll('.ag-header-cell[col-id="ag-Grid-SelectionColumn"]')
      .forEach(nameSelectionHeader);
  }

  var pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () {
      pending = false;
      apply();
    });
  }

  function start() {
    apply();
    new MutationObserver(schedule).observe(document.body, {
      childList: true,
      subtree: true,
      attributes: true,
      attributeFilter: ["role", "aria-selected", "aria-labelledby", "id"],
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
