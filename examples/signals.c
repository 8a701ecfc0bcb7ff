/* signals: a document notifies the views that watch it.
 *
 * Views connect weakly: when a view is dropped it is simply never called
 * again, with no disconnect call anywhere. The document is the sender, so
 * a view only hears about the document it watches. */
#include <hark.h>
#include <stdio.h>

typedef struct document {
  hark_object base; /* first member: a document is a hark object */
  const char *title;
} document;

typedef struct view {
  hark_object base;
  const char *name;
  int redraws;
} view;

static const hark_type document_type = {"document", sizeof(document), NULL, NULL};
static const hark_type view_type = {"view", sizeof(view), NULL, NULL};

/* A bound method: self is the view, sender the document that changed. */
static int view_on_changed(void *self, void *sender, void *args) {
  view *v = self;
  document *d = sender;
  v->redraws++;
  printf("  %s redraws '%s' (%s)\n", v->name, d->title, (const char *)args);
  return 0;
}

static int log_any_change(void *self, void *sender, void *args) {
  (void)self;
  printf("  log: '%s' changed\n", ((document *)sender)->title);
  (void)args;
  return 0;
}

int main(void) {
  hark_signal *changed = hark_signal_new("document-changed");
  document *report = hark_new(&document_type);
  document *notes = hark_new(&document_type);
  view *editor = hark_new(&view_type);
  view *preview = hark_new(&view_type);
  if (!changed || !report || !notes || !editor || !preview) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  report->title = "report";
  notes->title = "notes";
  editor->name = "editor";
  preview->name = "preview";

  /* Both views watch the report; a plain function logs every document. */
  hark_connect(changed, view_on_changed, editor, report, HARK_WEAK);
  hark_connect(changed, view_on_changed, preview, report, HARK_WEAK);
  hark_connect(changed, log_any_change, NULL, NULL, 0);

  printf("report edited:\n");
  int called = hark_send(changed, report, "typing");
  printf("  -> %d receivers\n", called);

  printf("notes edited (no view watches notes):\n");
  hark_send(changed, notes, "typing");

  /* The preview window closes: its last reference goes. Nobody calls
   * disconnect, and the signal does not keep it alive. */
  hark_unref(preview);
  printf("preview closed; report edited again:\n");
  called = hark_send(changed, report, "saved");
  printf("  -> %d receivers\n", called);

  hark_unref(editor);
  hark_unref(report);
  hark_unref(notes);
  hark_unref(changed);
  printf("live hark objects at the end: %zu\n", hark_live_count(NULL));
  return hark_live_count(NULL) == 0 ? 0 : 1;
}
