/* sqlite-tensor: the report tables (tensor_stats, tensor_models, tensor_pages), as data:
** each one's name, declared columns and the SQL that answers it. store/report_tables.pxi
** serves them; engine.pyx registers one virtual-table module per entry. Included only by
** the engine (static data).
**
** Residuals and factors count as physical bytes of the model that owns them (always one),
** residuals' pages as pages it reads. Each report's SQL starts with a CTE `res` of the
** residual rows and the factors rows (page_id NULL: factors live in no page); a store
** without those tables gets none of theirs. */
#ifndef ST_REPORTS_H
#define ST_REPORTS_H
typedef struct st_report {
    const char *name;    /* eponymous table-valued function */
    const char *columns; /* CREATE TABLE x(...) with the HIDDEN store column last */
    int ncols;           /* visible columns; the store column's index */
    const char *sql;     /* SELECT of those columns; {part} = the store's shadow table,
                          ** %s = the residual and factors rows (tensor_id, page_id,
                          ** nbytes) */
} st_report;

static const st_report st_reports[] = {
    {"tensor_stats",
     "CREATE TABLE x(models INTEGER, tensors INTEGER, logical_bytes INTEGER,"
     " physical_bytes INTEGER, distinct_blocks INTEGER, pages INTEGER, page_bytes INTEGER,"
     " dedup_ratio REAL, block_rows INTEGER, block_cols INTEGER, page_blocks INTEGER,"
     " store HIDDEN)",
     11,
     "WITH res(tensor_id, page_id, nbytes) AS (%s)"
     " SELECT (SELECT count(*) FROM {models}), (SELECT count(*) FROM {tensors}),"
     " l.b, p.b + r.b, p.n, (SELECT count(*) FROM {pages}),"
     " (SELECT coalesce(sum(nbytes), 0) FROM {pages}),"
     " CASE WHEN p.b + r.b > 0 THEN 1.0 * l.b / (p.b + r.b) END,"
     " (SELECT value FROM {config} WHERE key = 'block_rows'),"
     " (SELECT value FROM {config} WHERE key = 'block_cols'),"
     " (SELECT value FROM {config} WHERE key = 'page_blocks')"
     " FROM (SELECT coalesce(sum(nbytes), 0) AS b FROM {tensors}) l,"
     " (SELECT coalesce(sum(nbytes), 0) AS b, count(*) AS n FROM {blocks}) p,"
     " (SELECT coalesce(sum(nbytes), 0) AS b FROM res) r"},
    {"tensor_models",
     "CREATE TABLE x(model TEXT, tensors INTEGER, blocks INTEGER, logical_bytes INTEGER,"
     " physical_bytes INTEGER, private_bytes INTEGER, pages INTEGER, store HIDDEN)",
     7,
     "WITH res(tensor_id, page_id, nbytes) AS (%s),"
     " uses(model_id, block_id) AS (SELECT DISTINCT t.model_id, m.block_id"
     "   FROM {map} m JOIN {tensors} t ON t.id = m.tensor_id),"
     " owners(block_id, n) AS (SELECT block_id, count(*) FROM uses GROUP BY block_id),"
     " own(model_id, page_id, nbytes) AS (SELECT t.model_id, r.page_id, r.nbytes"
     "   FROM res r JOIN {tensors} t ON t.id = r.tensor_id)"
     " SELECT mo.name,"
     " (SELECT count(*) FROM {tensors} t WHERE t.model_id = mo.id),"
     " (SELECT count(*) FROM uses u WHERE u.model_id = mo.id),"
     " (SELECT coalesce(sum(t.nbytes), 0) FROM {tensors} t WHERE t.model_id = mo.id),"
     " (SELECT coalesce(sum(b.nbytes), 0) FROM uses u JOIN {blocks} b ON b.id = u.block_id"
     "   WHERE u.model_id = mo.id)"
     " + (SELECT coalesce(sum(o.nbytes), 0) FROM own o WHERE o.model_id = mo.id),"
     " (SELECT coalesce(sum(b.nbytes), 0) FROM uses u JOIN {blocks} b ON b.id = u.block_id"
     "   JOIN owners o ON o.block_id = u.block_id WHERE u.model_id = mo.id AND o.n = 1)"
     " + (SELECT coalesce(sum(o.nbytes), 0) FROM own o WHERE o.model_id = mo.id),"
     " (SELECT count(page_id) FROM (SELECT b.page_id FROM uses u JOIN {blocks} b"
     "   ON b.id = u.block_id WHERE u.model_id = mo.id"
     "   UNION SELECT o.page_id FROM own o WHERE o.model_id = mo.id))"
     " FROM {models} mo ORDER BY mo.id"},
    {"tensor_pages",
     "CREATE TABLE x(page_id INTEGER, bytes INTEGER, blocks INTEGER, models INTEGER,"
     " tensors INTEGER, store HIDDEN)",
     5,
     "WITH res(tensor_id, page_id, nbytes) AS (%s)"
     " SELECT p.id, p.nbytes, p.nblocks,"
     " (SELECT count(DISTINCT x.model_id) FROM (SELECT t.model_id FROM {blocks} b"
     "   JOIN {map} m ON m.block_id = b.id JOIN {tensors} t ON t.id = m.tensor_id"
     "   WHERE b.page_id = p.id UNION ALL SELECT t.model_id FROM res r"
     "   JOIN {tensors} t ON t.id = r.tensor_id WHERE r.page_id = p.id) x),"
     " (SELECT count(DISTINCT x.tensor_id) FROM (SELECT m.tensor_id FROM {blocks} b"
     "   JOIN {map} m ON m.block_id = b.id WHERE b.page_id = p.id"
     "   UNION ALL SELECT r.tensor_id FROM res r WHERE r.page_id = p.id) x)"
     " FROM {pages} p ORDER BY p.id"},
    {0, 0, 0, 0}};
#endif
