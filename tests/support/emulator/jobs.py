"""Geoprocessing: the System GP services and their tasks, job resources (status, cancel,
results), the job lifecycle in worker threads, and the caching tools' statistics."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .model import (
    CANCELLED,
    CANCELLING,
    CURRENT_VERSION,
    ERROR,
    EXECUTING,
    FAILED,
    INFO,
    INJECTABLE_ENDS,
    JOB_DONE,
    SECRET_PARAMS,
    SUBMITTED,
    SUCCEEDED,
    WARNING,
    Faults,
    Job,
    JobCancelled,
    JobFailed,
    Request,
    Response,
    json_response,
    redact,
    rest_error,
)

log = logging.getLogger(__name__)

PUBLISH_TASK = "Publish Service Definition"
CACHE_TASK = "Manage Map Cache Tiles"
IMPORT_TASK = "Import Map Server Cache"
REPORT_TASK = "ReportCacheStatus"
CACHE_SERVICES = ("CachingControllers", "CachingTools")
UPDATE_MODES = ("RECREATE_ALL_TILES", "RECREATE_EMPTY_TILES", "DELETE_TILES")


def _param(name: str, dtype: str, display: str, required: bool, default: Any = None, **kw):
    out = {
        "name": name,
        "dataType": dtype,
        "displayName": display,
        "description": "",
        "direction": "esriGPParameterDirectionInput",
        "defaultValue": default,
        "parameterType": "esriGPParameterTypeRequired"
        if required
        else "esriGPParameterTypeOptional",
        "category": "",
    }
    out.update(kw)
    return out


#: GP services under System/, their tasks, execution type and input parameters.
GP_TASKS: dict[str, dict[str, tuple[str, list[dict]]]] = {
    "PublishingTools": {
        PUBLISH_TASK: (
            "esriExecutionTypeAsynchronous",
            [
                _param("in_sdp_id", "GPString", "Service Definition item ID", True),
                _param("in_config_overwrite", "GPString", "Configuration overwrite", False),
                _param("in_publish_options", "GPString", "Publish options", False),
            ],
        )
    },
    **{
        svc: {
            CACHE_TASK: (
                "esriExecutionTypeAsynchronous",
                [
                    _param("service_url", "GPString", "Input Map Service URL", True),
                    _param("levels", "GPString", "Scales", True),
                    _param("thread_count", "GPLong", "Number of caching service instances", True),
                    _param(
                        "update_mode",
                        "GPString",
                        "Update Mode",
                        True,
                        "RECREATE_ALL_TILES",
                        choiceList=list(UPDATE_MODES),
                    ),
                    _param("constraining_extent", "GPString", "Update Extent", False, "DEFAULT"),
                    _param(
                        "area_of_interest",
                        "GPFeatureRecordSetLayer",
                        "Area of Interest",
                        False,
                        {"geometryType": "esriGeometryPolygon", "features": []},
                    ),
                ],
            )
        }
        for svc in CACHE_SERVICES
    },
    "CachingTools": {
        **{CACHE_TASK: None},  # filled in below (the same task as CachingControllers')
        IMPORT_TASK: (
            "esriExecutionTypeAsynchronous",
            [
                _param("service_url", "GPString", "Input Map Service URL", True),
                _param(
                    "source_cache_type",
                    "GPString",
                    "Source Cache Type",
                    True,
                    "TILE_PACKAGE",
                    choiceList=["CACHE_DATASET", "TILE_PACKAGE"],
                ),
                _param("source_cache_dataset", "GPString", "Source Cache Dataset", False),
                _param("source_tile_package", "GPDataFile", "Source Tile Package", False),
                _param("upload_data_to_server", "GPString", "Upload data to server", False),
                _param("levels", "GPString", "Scales", True),
                _param("thread_count", "GPLong", "Number of caching service instances", False),
                _param("area_of_interest", "GPFeatureRecordSetLayer", "Area of Interest", False),
                _param("import_extent", "GPString", "Import Extent", False, "DEFAULT"),
                _param(
                    "overwrite",
                    "GPString",
                    "Overwrite Tiles",
                    False,
                    "MERGE",
                    choiceList=["MERGE", "OVERWRITE"],
                ),
            ],
        ),
    },
    "ReportingTools": {
        REPORT_TASK: (
            "esriExecutionTypeSynchronous",
            [
                _param("service_url", "GPString", "Input Map Service URL", True),
                _param("report_mode", "GPString", "Report Mode", False, "esriCacheStatus"),
            ],
        )
    },
}


class JobsMixin:
    """The GP services of :class:`~support.emulator.server.Emulator` and its job runner.

    The work itself is the publishing and caching mixins' (``_publish_job``,
    ``_cache_job``, ``_report_cache_status``).
    """

    root: Path
    faults: Faults
    jobs: dict[str, Job]
    _lock: threading.RLock
    _started: float
    _cache_jobs_run: int

    def _gpserver(self, req: Request, where: list[str], rest: list[str]) -> Response:
        p = req.pretty
        if len(where) != 2 or where[0] != "System" or where[1] not in GP_TASKS:
            return json_response(rest_error(404, "Service not found", ["/".join(where)]), p)
        gp = where[1]
        if gp == "CachingControllers" and self.faults.no_caching_controllers:
            return json_response(rest_error(404, "Service not found", ["System/" + gp]), p)
        tasks = GP_TASKS[gp]
        if not rest:
            kinds = {v[0] for v in tasks.values()}
            return json_response(
                {
                    "currentVersion": CURRENT_VERSION,
                    "serviceDescription": f"{gp} (tiledelta emulator)",
                    "tasks": sorted(tasks),
                    "executionType": kinds.pop() if len(kinds) == 1 else "",
                    "resultMapServerName": "",
                    "maximumRecords": 1000,
                },
                p,
            )
        if rest[0] == "jobs":
            return self._job_resource(req, gp, None, rest[1:])
        if rest[0] == "uploads" and gp == "CachingTools":
            return self._gp_uploads(req, rest[1:])  # type: ignore[attr-defined]
        task = rest[0]
        if task not in tasks:
            return json_response(
                rest_error(400, "Invalid URL", [f"no task {task!r} in System/{gp}"]), p
            )
        kind, parameters = tasks[task]
        if len(rest) == 1:
            return json_response(
                {
                    "name": task.replace(" ", ""),
                    "displayName": task,
                    "description": "",
                    "category": "",
                    "helpUrl": "",
                    "executionType": kind,
                    "parameters": parameters,
                },
                p,
            )
        op = rest[1]
        if op == "jobs":
            return self._job_resource(req, gp, task, rest[2:])
        if op == "submitJob" and len(rest) == 2:
            if kind != "esriExecutionTypeAsynchronous":
                return json_response(
                    rest_error(
                        400,
                        "Unable to complete operation.",
                        [f"{task} is synchronous: use execute"],
                    ),
                    p,
                )
            return json_response(self._submit(gp, task, req.params).submit_info, p)
        if op == "execute" and len(rest) == 2:
            if kind != "esriExecutionTypeSynchronous":
                return json_response(
                    rest_error(
                        400,
                        "Unable to complete operation.",
                        [f"{task} is asynchronous: use submitJob"],
                    ),
                    p,
                )
            return json_response(self._report_cache_status(req.params), p)
        return json_response(rest_error(400, "Invalid URL", [req.path]), p)

    def _job_resource(self, req: Request, gp: str, task: str | None, rest: list[str]) -> Response:
        p = req.pretty
        job = self.jobs.get(rest[0]) if rest else None
        if job is None or job.service != gp or (task is not None and job.task != task):
            return json_response(rest_error(400, "Job not found", [rest[0] if rest else ""]), p)
        if len(rest) == 1:
            job.messages_asked = req.params.get("returnMessages", "").lower() == "true"
            return json_response(job.info(), p)
        if rest[1:] == ["cancel"]:
            with self._lock:
                if job.status not in JOB_DONE:
                    job.cancel_event.set()
                    if job.status == EXECUTING:
                        job.status = CANCELLING
            return json_response({"jobId": job.id, "jobStatus": job.status}, p)
        if len(rest) == 3 and rest[1] == "results" and rest[2] in job.results:
            value = job.results[rest[2]]
            return json_response({"paramName": rest[2], "dataType": "GPString", "value": value}, p)
        if len(rest) == 3 and rest[1] == "inputs" and rest[2] in job.params:
            value = job.params[rest[2]]
            return json_response({"paramName": rest[2], "dataType": "GPString", "value": value}, p)
        return json_response(rest_error(400, "Invalid URL", [req.path]), p)

    # -- the job lifecycle ------------------------------------------------------------------
    def _submit(self, gp: str, task: str, params: dict[str, str]) -> Job:
        with self._lock:
            inject = self.faults.fail_next_jobs > 0
            if inject:
                self.faults.fail_next_jobs -= 1
            end = self.faults.end_next_jobs.pop(0) if self.faults.end_next_jobs else None
            job = Job(
                inject_end=end,
                id="j" + uuid.uuid4().hex,
                service=gp,
                task=task,
                params=redact(params),
                submitted=time.time(),
                inject_failure=inject,
            )
            self.jobs[job.id] = job
        job.message(f"Submitted. ({task}, tiledelta emulator)")
        job.submit_info = {"jobId": job.id, "jobStatus": SUBMITTED}
        work = {PUBLISH_TASK: self._publish_job, IMPORT_TASK: self._import_cache_job}.get(
            task, self._cache_job
        )
        args = {k: v for k, v in params.items() if k.lower() not in SECRET_PARAMS}
        threading.Thread(
            target=self._run_job, args=(job, work, args), name=f"job-{job.id[:9]}", daemon=True
        ).start()
        return job

    def _run_injected(self, job: Job) -> None:
        """A job that ends as ``Faults.end_next_jobs`` said, without doing its work."""
        state = job.inject_end or SUCCEEDED
        with self._lock:
            job.status = EXECUTING
            job.message("Executing...")
        time.sleep(0.05)
        with self._lock:
            for text in INJECTABLE_ENDS.get(state, [f"Unknown state {state} (injected)."]):
                job.message(text, ERROR if "ERROR" in text else WARNING)
            job.status = state
        if state == CANCELLING:
            wait = float(self.faults.cancelling_seconds)
            job.cancel_event.wait(None if wait < 0 else wait)
            with self._lock:
                job.status = CANCELLED
                job.message("Cancelled.", WARNING)
        elif state not in JOB_DONE and state != "esriJobDeleting":
            job.cancel_event.wait()  # an unknown state: it stays until the emulator stops
        job.finished = time.time()
        self._save_job(job)
        job.done.set()

    def _run_job(self, job: Job, work, params: dict[str, str]) -> None:
        if job.inject_end not in (None, SUCCEEDED):
            self._run_injected(job)
            return
        t0 = time.perf_counter()
        end: tuple[str, list[tuple[str, str]]]
        try:
            work(job, params)
        except JobCancelled:
            end = (CANCELLED, [("Cancelled. Tiles written before the cancel were kept.", WARNING)])
        except JobFailed as exc:
            end = (FAILED, [(str(exc), ERROR), ("Failed.", ERROR)])
        except Exception as exc:  # a bug or an unexpected data problem: report, do not crash
            log.exception("emulator job %s failed", job.id)
            end = (FAILED, [(f"{type(exc).__name__}: {exc}", ERROR), ("Failed.", ERROR)])
        else:
            took = time.perf_counter() - t0
            end = (SUCCEEDED, [(f"Succeeded (elapsed time: {took:.2f} seconds).", INFO)])
        try:
            with self._lock:
                for text, kind in end[1]:
                    job.message(text, kind)
                job.status = end[0]
        finally:
            job.progress = None
            job.finished = time.time()
            self._save_job(job)
            job.done.set()

    def _save_job(self, job: Job) -> None:
        folder = self.root / "jobs" / job.id
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            record = {k: (sorted(v) if isinstance(v, set) else v) for k, v in job.record.items()}
            doc = {**job.info(), "task": job.task, "service": job.service, "record": record}
            (folder / "job.json").write_text(json.dumps(doc, indent=1, default=list), "utf-8")

    def _begin(self, job: Job) -> None:
        """The job starts executing: apply the slow and failure faults, honour a cancel."""
        with self._lock:
            if job.cancel_event.is_set():
                raise JobCancelled()
            job.status = EXECUTING
            job.message("Executing...")
        delay = float(self.faults.slow_job_seconds or 0)
        deadline = time.monotonic() + delay
        while delay > 0 and (left := deadline - time.monotonic()) > 0:
            if job.cancel_event.wait(min(left, 0.05)):
                raise JobCancelled()
        if job.inject_failure:
            raise JobFailed("Injected failure (emulator fault fail_next_jobs).")

    def _checkpoint(self, job: Job) -> None:
        if job.cancel_event.is_set():
            raise JobCancelled()

    # -- admin: the caching tools' statistics -------------------------------------------------
    def _statistics(self) -> dict:
        with self._lock:
            running = sum(
                1
                for j in self.jobs.values()
                if j.service in CACHE_SERVICES and j.status in (EXECUTING, CANCELLING)
            )
            f = self.faults
            extra = 0
            if f.busy != 0:
                extra = max(1, f.busy_instances)
                if f.busy > 0:
                    f.busy -= 1
        busy = running + extra
        most = max(4, busy)
        return {
            "summary": {
                "folderName": "System",
                "serviceName": "CachingTools",
                "type": "GPServer",
                "startTime": int(self._started * 1000),
                "endTime": int(time.time() * 1000),
                "max": most,
                "busy": busy,
                "free": most - busy,
                "initializing": 0,
                "notCreated": 0,
                "transactions": self._cache_jobs_run,
                "isStatisticsAvailable": True,
            },
            "perMachine": [
                {
                    "machineName": "EMULATOR",
                    "isStatisticsAvailable": True,
                    "busy": busy,
                    "free": most - busy,
                    "max": most,
                }
            ],
        }


GP_TASKS["CachingTools"][CACHE_TASK] = GP_TASKS["CachingControllers"][CACHE_TASK]
