"""The renames of issue #12 (prefix per chapter), as a tool for merging code written against
the old names: `python tools/engine_renames.py FILE...` rewrites identifiers in code (and
names with an underscore in comments and docstrings; never inside string literals). Files
under cython/cache/ get code-only renames. Old -> new is M below; PAGE_* constants became
ST_PAGE_* (c/st_page.h)."""
import re
import sys

M = {}
def add(prefix, names, strip=""):
    for n in names.split():
        if "=" in n:
            a, b = n.split("=")
        else:
            a, b = n, prefix + (n[len(strip):] if strip and n.startswith(strip) else n)
        M[a] = b
# store/sql_text.pxi
add("st_sql_", "text_or expand_sql=st_sql_expand is_shadow_part prepare_store_sql=st_sql_prepare "
    "exec_store_sql=st_sql_exec store_has_residuals=st_sql_has_residuals interrupted "
    "length_limit check_result_bytes utf8_prefix skip_sql_space=st_sql_skip_space "
    "prepare_user_query split_store_name")
# store/query_cursor.pxi
add("st_qc_", "qc_open qc_close set_vtab_error qc_start qc_next qc_eof qc_rowid qc_column", "qc_")
# store/page_reader.pxi
add("st_page_", "page_slots_at=st_page_slots_at check_page_header=st_page_check_header "
    "check_page=st_page_check check_slot=st_page_check_slot read_store_config lookup_tensor "
    "check_tensor_info residual_bytes check_residual residual_code residual_add residual_row_add")
# store/store_vtab.pxi
add("st_vtab_", "parse_option store_create store_connect store_disconnect store_destroy "
    "store_best_index store_open store_filter store_column read_tensor_shape store_shadow_name "
    "store_module init_store_module=st_vtab_init_module store_rowid store_objects_exist=st_vtab_objects_exist "
    "ddl_object_count store_config_int=st_vtab_config_int st_needs_upgrade=st_vtab_needs_upgrade "
    "align64 page_v1_to_v2 upgrade_pages st_upgrade=st_vtab_upgrade store_rename", "store_")
# store/report_tables.pxi
add("st_report_", "report_connect report_disconnect report_best_index report_open report_close "
    "report_filter report_column report_module init_report_module=st_report_init_module", "report_")
# store/sql_functions.pxi
add("st_fn_", "text_args value_type_name fn_tensor_blob fn_tensor_version", "fn_")
# inference/inference_sql.pxi
add("st_infer_", "plan_destroy statement_plan fail fn_tensor_predict fn_tensor_argmax fn_tensor_max "
    "fn_tensor_topk fn_tensor_json fn_tensor_threads float_blob blob_float argmax_of result_str "
    "append_json_float ranks_above heap_sift_down", "fn_tensor_")
# inference/kernels.pxi
add("st_kern_", "kernel_threads=st_kern_thread_count st_threads=st_kern_thread_setting cursor_tile "
    "cursor_residual has_residual cursor_release widen as_f32 gather tile_product lowrank_product "
    "dense dense_range dense_chunk tile_rows tile_cols embed_add check_id embedding activate "
    "forward forward_pass")
# inference/model_input.pxi
add("st_input_", "builder_reset builder_free grow json_number_end parse_json_numbers append_ids "
    "with_expectation builder_add", "builder_")
# inference/model_plan.pxi
add("st_plan_", "dtype_code act_code op_code weight_free plan_free=st_plan_free weight_from_row "
    "load_tiles load_residuals plan_load=st_plan_load plan_layer_shapes=st_plan_layer_shapes")
# inference/predict_batch.pxi
add("st_batch_", "batch_connect batch_best_index batch_open batch_clear_rows batch_reset batch_close "
    "batch_error batch_fill batch_filter batch_next batch_eof batch_column batch_rowid batch_module "
    "init_batch_module=st_batch_init_module", "batch_")
# engine.pyx
add("st_engine_", "register_functions fn_load_extension_refused=st_engine_load_extension_refused "
    "refuse_sql_load_extension=st_engine_refuse_load_extension init_process")
add("st_py_", "require_loaded _take_plan=st_py_take_plan _give_back_plan=st_py_give_back_plan "
    "set_input _forward_into=st_py_forward_into _input_arrays=st_py_input_arrays _raise=st_py_raise")
TOK = re.compile(r'''(?P<tq>[bB]?(?:"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'))|(?P<sq>[bBfFrR]*(?:"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))|(?P<com>\#[^\n]*)|(?P<id>(?<![.\w])[A-Za-z_]\w*)''')
IDW = re.compile(r'(?<![.\w])([A-Za-z_]\w*)\b')
def distinctive(n): return '_' in n.strip('_')
def sub_text(text, code):
    def r(m):
        n = m.group(1)
        if n in M and (code or distinctive(n)):
            return M[n]
        return n
    return IDW.sub(r, text)
def process(s, code_only):
    out = []
    pos = 0
    for m in TOK.finditer(s):
        out.append(s[pos:m.start()])
        t = m.group(0)
        if m.group('id'):
            out.append(M.get(t, t))
        elif m.group('tq') or m.group('com'):
            out.append(t if code_only else sub_text(t, False))
        else:
            out.append(t)
        pos = m.end()
    out.append(s[pos:])
    return ''.join(out)
for old in ("PAGE_MAGIC", "PAGE_VERSION", "PAGE_V1_HEADER_BYTES", "PAGE_HEADER_BYTES",
            "PAGE_CHECKSUM_AT", "PAGE_SLOT_BYTES"):
    M[old] = "ST_" + old
for f in sys.argv[1:]:
    s = open(f).read()
    n = process(s, '/cache/' in f)
    if n != s:
        open(f, 'w').write(n)
