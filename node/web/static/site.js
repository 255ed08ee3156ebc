// Progressive enhancement only: every page works without this file.
// Ranked ballots: drag an option, or press its Up/Down button, and the position
// numbers are rewritten in the new order (the form still sends numbers).
"use strict";
document.documentElement.classList.add("js");

function renumber(list) {
  list.querySelectorAll("li").forEach(function (li, i) {
    li.querySelector("input.num").value = String(i + 1);
  });
}

function moveButton(text, label, onClick) {
  var b = document.createElement("button");
  b.type = "button";
  b.className = "small secondary";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

document.querySelectorAll("ol[data-rank]").forEach(function (list) {
  var dragged = null;
  list.querySelectorAll("li").forEach(function (li) {
    var name = li.querySelector("label").textContent;
    li.draggable = true;
    li.classList.add("grip");
    li.appendChild(moveButton("Up", "Move " + name + " up", function () {
      if (li.previousElementSibling) { list.insertBefore(li, li.previousElementSibling); renumber(list); this.focus(); }
    }));
    li.appendChild(moveButton("Down", "Move " + name + " down", function () {
      if (li.nextElementSibling) { list.insertBefore(li.nextElementSibling, li); renumber(list); this.focus(); }
    }));
    li.addEventListener("dragstart", function (e) {
      dragged = li; li.classList.add("dragging"); e.dataTransfer.effectAllowed = "move";
    });
    li.addEventListener("dragend", function () { li.classList.remove("dragging"); dragged = null; });
    li.addEventListener("dragover", function (e) {
      e.preventDefault();
      if (!dragged || dragged === li) return;
      var box = li.getBoundingClientRect();
      var after = e.clientY > box.top + box.height / 2;
      list.insertBefore(dragged, after ? li.nextSibling : li);
    });
    li.addEventListener("drop", function (e) { e.preventDefault(); renumber(list); });
  });
  // Typed numbers still work: sort the list to match them when one changes.
  list.addEventListener("change", function (e) {
    if (!e.target.matches("input.num")) return;
    var items = Array.prototype.slice.call(list.children);
    items.sort(function (a, b) {
      var x = parseInt(a.querySelector("input.num").value, 10) || 1e9;
      var y = parseInt(b.querySelector("input.num").value, 10) || 1e9;
      return x - y;
    });
    items.forEach(function (li) { list.appendChild(li); });
  });
});

document.querySelectorAll("form[data-confirm]").forEach(function (form) {
  form.addEventListener("submit", function (e) {
    if (!window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
  });
});
